import type { Clock } from '../clock.js'
import type { JobRow } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { toError } from '../errors.js'
import type { JobRequest } from '../jobs/job-request.js'
import { openRequest, type Keyring } from '../jobs/request-crypto.js'
import { attemptUsage } from '../providers/call-provider.js'
import { callWithFallbacks } from '../providers/call-with-fallbacks.js'
import { DeltaStream } from '../providers/delta-stream.js'
import { BreakerOpen, ProviderAborted, ProviderError } from '../providers/errors.js'
import type { ProviderRegistry } from '../providers/registry.js'
import type { AttemptUsage, CallUsage } from '../providers/types.js'
import type { AbortReason, JobDecision, JobExecutor } from './pool.js'

export interface ProviderExecutorOptions {
  registry: ProviderRegistry
  clock: Clock
  resultMaxBytes: number
  /** AI_DEFAULT_MODEL, for rows that name no model. */
  defaultModel: string
  encryptionKeys: Keyring | undefined
  /** Every provider call of a job (the answering one, or the one whose failure ends the attempt). */
  onProviderCall?: (call: { row: JobRow; provider: string; model: string; outcome: 'ok' | 'retryable' | 'terminal'; ms: number }) => void
  /**
   * When given, every provider call streams and each piece of text is handed here as it arrives
   * (SPEC §9 `event: delta`). `index` counts from 0, and from 0 again after each `onReset`.
   */
  onDelta?: (jobId: number, index: number, text: string) => void
  /**
   * The text sent so far for this job is void (SPEC §9 `event: reset`). Called before the first
   * delta of a try that follows text already sent: a retry within the attempt, or any claim after
   * the first (`attempts > 1`), since the executor cannot see what an earlier claim streamed. A
   * claim that streamed and is given back at shutdown without spending its attempt sends one as
   * it ends, because the next claim may carry the same `attempts`.
   */
  onReset?: (jobId: number) => void
}

function failure(error: ProviderError, provider: string, model: string, latencyMs: number): string {
  return JSON.stringify({
    output: null,
    finish_reason: 'error',
    provider,
    model,
    usage: null,
    latency_ms: latencyMs,
    error: { code: error.providerCode ?? (error.status !== undefined ? `http_${error.status}` : error.name), status: error.status ?? null },
  })
}

function dropFor(reason: AbortReason | undefined, usage: AttemptUsage): JobDecision | undefined {
  if (reason === 'cancel') return { kind: 'drop', reason: 'canceled while running', usage }
  if (reason === 'lease_lost') return { kind: 'drop', reason: 'lease lost while running', usage }
  return undefined
}

/**
 * Runs a claimed job in-process: the provider call on the job's model and its fallbacks (with
 * retries inside the attempt, streaming when `onDelta` is given), then the decision the pool
 * writes. The job's result is `{ output, finish_reason, provider, model, usage, latency_ms }`
 * of the model that answered (`usage` is `null` when the provider reported none); failures add
 * the provider's error code. Every decision after the provider calls carries the attempt's usage.
 */
export function createProviderExecutor(options: ProviderExecutorOptions): JobExecutor {
  const { registry, clock, onDelta, onReset } = options
  return async (row: JobRow, signal: AbortSignal, abortReason: () => AbortReason | undefined): Promise<JobDecision> => {
    const started = row.started_at ? fromDbTime(row.started_at) : clock.now()
    let request: JobRequest
    try {
      request = JSON.parse(openRequest(row.request_json, options.encryptionKeys, row.idempotency_key)) as JobRequest
    } catch (err) {
      return {
        kind: 'finish',
        outcome: { status: 'failed', resultJson: null, errorText: `stored request cannot be read: ${toError(err).message}`, providerMs: null, workerMs: 0, inputTokens: null, outputTokens: null },
      }
    }
    // Rows migrated from the seed may name no model: they run on the default one.
    const model = row.model || request.model || options.defaultModel
    const calls: CallUsage[] = []
    const deltas = onDelta
      ? new DeltaStream({ onDelta: (index, text) => onDelta(row.id, index, text), onReset: () => onReset?.(row.id) }, { resetFirst: row.attempts > 1 })
      : undefined
    const chain = await callWithFallbacks(registry.chain(model), {
      ...(request.input !== undefined ? { input: request.input } : {}),
      ...(request.messages !== undefined ? { messages: request.messages } : {}),
      params: request.params,
      idempotencyKey: row.idempotency_key,
    }, {
      clock, signal, usage: calls, ...(deltas ? { deltas } : {}),
      onFallback: (from, _to, error) => {
        if (error instanceof ProviderError) options.onProviderCall?.({ row, provider: from.provider.name, model: from.model, outcome: 'retryable', ms: Math.max(0, clock.now() - started) })
      },
    })
    const usage = attemptUsage(calls)
    const providerName = chain.resolved.provider.name
    const answeredBy = chain.resolved.model

    if (chain.ok) {
      const { call } = chain
      options.onProviderCall?.({ row, provider: providerName, model: answeredBy, outcome: 'ok', ms: call.providerMs })
      const tokens = call.result.usageReported ? call.result.usage : null
      const resultJson = JSON.stringify({
        output: call.result.output,
        finish_reason: call.result.finish_reason,
        provider: providerName,
        model: answeredBy,
        usage: tokens,
        latency_ms: call.providerMs,
      })
      const workerMs = Math.max(0, clock.now() - started)
      const counts = { inputTokens: tokens?.input_tokens ?? null, outputTokens: tokens?.output_tokens ?? null }
      const bytes = Buffer.byteLength(resultJson)
      if (bytes > options.resultMaxBytes) {
        return {
          kind: 'finish',
          outcome: {
            status: 'failed', resultJson: null,
            errorText: `the provider's result is ${bytes} bytes, over RESULT_MAX_BYTES (${options.resultMaxBytes}); it was not stored`,
            providerMs: call.providerMs, workerMs, ...counts,
          },
          usage,
        }
      }
      return {
        kind: 'finish',
        outcome: { status: 'succeeded', resultJson, errorText: null, providerMs: call.providerMs, workerMs, ...counts },
        usage,
      }
    }

    const err = chain.error
    const reason = abortReason()
    // Given back without spending the attempt: the next claim may carry the same `attempts`,
    // so the text this one streamed is voided now.
    if (reason === 'shutdown' && deltas && deltas.sent > 0) onReset?.(row.id)
    const dropped = dropFor(reason, usage)
    if (dropped) return dropped
    if (err instanceof BreakerOpen) {
      // Jobs wait while the breakers are open and spend no attempt (SPEC §6).
      return { kind: 'release', runAfterMs: err.retryAt, reason: 'circuit breaker open', usage }
    }
    if (err instanceof ProviderAborted) {
      // Shutdown: the pool turns this into a release without spending the attempt.
      return { kind: 'release', runAfterMs: clock.now(), reason: 'aborted', usage }
    }
    const latency = Math.max(0, clock.now() - started)
    if (err instanceof ProviderError) {
      options.onProviderCall?.({ row, provider: providerName, model: answeredBy, outcome: err.retryable ? 'retryable' : 'terminal', ms: latency })
      if (!err.retryable) {
        return {
          kind: 'finish',
          outcome: { status: 'failed', resultJson: failure(err, providerName, answeredBy, latency), errorText: err.message, providerMs: null, workerMs: latency, inputTokens: null, outputTokens: null },
          usage,
        }
      }
      return {
        kind: 'retry', errorText: err.message, resultJson: failure(err, providerName, answeredBy, latency), usage,
        // A Retry-After longer than one attempt may wait (RETRY_DEFAULTS.maxRetryAfterMs) schedules the next claim.
        ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
      }
    }
    return { kind: 'retry', errorText: `worker error: ${err.message}`, usage }
  }
}
