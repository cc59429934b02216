import type { Clock } from '../clock.js'
import type { JobRow } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { toError } from '../errors.js'
import type { JobRequest } from '../jobs/job-request.js'
import { openRequest } from '../jobs/request-crypto.js'
import { callProvider } from '../providers/call-provider.js'
import { BreakerOpen, ProviderAborted, ProviderError } from '../providers/errors.js'
import type { ProviderRegistry } from '../providers/registry.js'
import type { AbortReason, JobDecision, JobExecutor } from './pool.js'

export interface ProviderExecutorOptions {
  registry: ProviderRegistry
  clock: Clock
  resultMaxBytes: number
  /** AI_DEFAULT_MODEL, for rows that name no model. */
  defaultModel: string
  encryptionKey: Buffer | undefined
  onProviderCall?: (provider: string, outcome: string, ms: number) => void
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

function dropFor(reason: AbortReason | undefined): JobDecision | undefined {
  if (reason === 'cancel') return { kind: 'drop', reason: 'canceled while running' }
  if (reason === 'lease_lost') return { kind: 'drop', reason: 'lease lost while running' }
  return undefined
}

/**
 * Runs a claimed job in-process: the provider call (with retries inside the attempt), then the
 * decision the pool writes. The job's result is `{ output, finish_reason, provider, model, usage,
 * latency_ms }`; failures add the provider's error code.
 */
export function createProviderExecutor(options: ProviderExecutorOptions): JobExecutor {
  const { registry, clock } = options
  return async (row: JobRow, signal: AbortSignal, abortReason: () => AbortReason | undefined): Promise<JobDecision> => {
    const started = row.started_at ? fromDbTime(row.started_at) : clock.now()
    let request: JobRequest
    try {
      request = JSON.parse(openRequest(row.request_json, options.encryptionKey, row.idempotency_key)) as JobRequest
    } catch (err) {
      return {
        kind: 'finish',
        outcome: { status: 'failed', resultJson: null, errorText: `stored request cannot be read: ${toError(err).message}`, providerMs: null, workerMs: 0, inputTokens: null, outputTokens: null },
      }
    }
    // Rows migrated from the seed may name no model: they run on the default one.
    const model = row.model || request.model || options.defaultModel
    const resolved = registry.resolve(model)
    const providerName = resolved.provider.name
    try {
      const call = await callProvider(resolved, {
        model,
        ...(request.input !== undefined ? { input: request.input } : {}),
        ...(request.messages !== undefined ? { messages: request.messages } : {}),
        params: request.params,
        idempotencyKey: row.idempotency_key,
      }, { clock, signal })
      options.onProviderCall?.(providerName, 'ok', call.providerMs)
      const resultJson = JSON.stringify({
        output: call.result.output,
        finish_reason: call.result.finish_reason,
        provider: providerName,
        model,
        usage: call.result.usage,
        latency_ms: call.providerMs,
      })
      const workerMs = Math.max(0, clock.now() - started)
      const bytes = Buffer.byteLength(resultJson)
      if (bytes > options.resultMaxBytes) {
        return {
          kind: 'finish',
          outcome: {
            status: 'failed', resultJson: null,
            errorText: `the provider's result is ${bytes} bytes, over RESULT_MAX_BYTES (${options.resultMaxBytes}); it was not stored`,
            providerMs: call.providerMs, workerMs, inputTokens: call.result.usage.input_tokens, outputTokens: call.result.usage.output_tokens,
          },
        }
      }
      return {
        kind: 'finish',
        outcome: {
          status: 'succeeded', resultJson, errorText: null, providerMs: call.providerMs, workerMs,
          inputTokens: call.result.usage.input_tokens, outputTokens: call.result.usage.output_tokens,
        },
      }
    } catch (caught) {
      const err = toError(caught)
      const dropped = dropFor(abortReason())
      if (dropped) return dropped
      if (err instanceof BreakerOpen) {
        // Jobs wait while the breaker is open and spend no attempt (SPEC §6).
        return { kind: 'release', runAfterMs: err.retryAt, reason: 'circuit breaker open' }
      }
      if (err instanceof ProviderAborted) {
        // Shutdown: the pool turns this into a release without spending the attempt.
        return { kind: 'release', runAfterMs: clock.now(), reason: 'aborted' }
      }
      const latency = Math.max(0, clock.now() - started)
      if (err instanceof ProviderError) {
        options.onProviderCall?.(providerName, err.retryable ? 'retryable' : 'terminal', latency)
        if (!err.retryable) {
          return {
            kind: 'finish',
            outcome: { status: 'failed', resultJson: failure(err, providerName, model, latency), errorText: err.message, providerMs: null, workerMs: latency, inputTokens: null, outputTokens: null },
          }
        }
        return {
          kind: 'retry', errorText: err.message, resultJson: failure(err, providerName, model, latency),
          // A Retry-After longer than one attempt may wait (RETRY_DEFAULTS.maxRetryAfterMs) schedules the next claim.
          ...(err.retryAfterMs !== undefined ? { retryAfterMs: err.retryAfterMs } : {}),
        }
      }
      return { kind: 'retry', errorText: `worker error: ${err.message}` }
    }
  }
}
