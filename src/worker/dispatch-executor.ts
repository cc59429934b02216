import { request as httpRequest } from 'undici'
import type { Clock } from '../clock.js'
import type { JobRow } from '../db/jobs-repository.js'
import { toError } from '../errors.js'
import { bodySha256, signDispatchJwt, type DispatchSigningKey } from '../dispatch/jwt.js'
import { openRequest, type Keyring } from '../jobs/request-crypto.js'
import type { JobDecision, JobExecutor } from './pool.js'

export interface DispatchExecutorOptions {
  workerUrl: string
  callbackUrl: string
  key: DispatchSigningKey
  clock: Clock
  /** AI_QUEUE_TIMEOUT in ms: the whole POST, connect to last byte, never takes longer. */
  timeoutMs: number
  /** AI_WORKER_RESULT_SECONDS in ms: how long an accepted dispatch waits for its webhook. */
  resultWaitMs: number
  encryptionKeys: Keyring | undefined
  onDispatch?: (outcome: 'accepted' | 'refused' | 'error') => void
}

/**
 * External mode (SPEC §5): the pool never calls a provider; each claimed job is POSTed to
 * AI_WORKER_URL with a signed JWT. A 2xx leaves the job `running` until its webhook or the end of
 * AI_WORKER_RESULT_SECONDS; anything else puts it back to `pending` with backoff, without
 * spending an attempt, so a worker outage only delays jobs.
 */
export function createDispatchExecutor(options: DispatchExecutorOptions): JobExecutor {
  let consecutiveFailures = 0
  return async (row: JobRow, signal: AbortSignal, abortReason): Promise<JobDecision> => {
    const now = options.clock.now()
    let request: unknown
    try {
      request = JSON.parse(openRequest(row.request_json, options.encryptionKeys, row.idempotency_key))
    } catch (err) {
      return { kind: 'finish', outcome: { status: 'failed', resultJson: null, errorText: `stored request cannot be read: ${toError(err).message}`, providerMs: null, workerMs: null, inputTokens: null, outputTokens: null } }
    }
    const body = JSON.stringify({
      job_id: Number(row.id),
      idempotency_key: row.idempotency_key,
      // Set by the claim: the attempts spent so far plus this one (a failed dispatch spends none).
      attempt: Number(row.dispatch_attempt),
      request,
      callback_url: options.callbackUrl,
      request_id: row.request_id,
    })
    const token = await signDispatchJwt(options.key, {
      sub: String(row.user_id), jti: row.idempotency_key, aud: options.workerUrl, bodySha256: bodySha256(body), nowMs: now,
    })
    const backoff = () => {
      consecutiveFailures++
      // While the worker is down, jobs are tried again every 0.5 s … 30 s, not hammered.
      return now + Math.min(30_000, 250 * 2 ** Math.min(consecutiveFailures, 7)) * (0.5 + options.clock.random() / 2)
    }
    try {
      const response = await httpRequest(options.workerUrl, {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': row.request_id || String(row.id) },
        // undici's request() never follows redirects; a 3xx is a refusal like any other non-2xx.
        signal: AbortSignal.any([signal, AbortSignal.timeout(options.timeoutMs)]),
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs,
      })
      await response.body.dump()
      if (response.statusCode >= 200 && response.statusCode < 300) {
        consecutiveFailures = 0
        options.onDispatch?.('accepted')
        return { kind: 'dispatched', waitMs: options.resultWaitMs }
      }
      options.onDispatch?.('refused')
      return { kind: 'release', runAfterMs: backoff(), reason: `worker answered ${response.statusCode}` }
    } catch (err) {
      // Canceled while the POST was under way: the row is `canceled` already, nothing to write.
      if (abortReason() === 'cancel') return { kind: 'drop', reason: 'canceled while dispatching' }
      options.onDispatch?.('error')
      return { kind: 'release', runAfterMs: backoff(), reason: `dispatch failed: ${toError(err).message}` }
    }
  }
}
