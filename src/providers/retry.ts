import { setTimeout as delay } from 'node:timers/promises'
import type { Clock } from '../clock.js'
import { toError } from '../errors.js'
import { ProviderAborted, ProviderError } from './errors.js'

/** Waits `ms`, rejecting early when `signal` aborts. Injected so tests record delays instead. */
export type Sleep = (ms: number, signal: AbortSignal) => Promise<void>

export const defaultSleep: Sleep = (ms, signal) => delay(ms, undefined, { signal })

/**
 * SPEC §6: "exponential backoff and full jitter (100 ms → 2 s)".
 * `maxRetryAfterMs` is our own ceiling on how long one attempt may wait for a provider's
 * `Retry-After`: 10 s keeps a worker slot (and a lease of `JOB_LEASE_SECONDS`, 60 s by default)
 * from idling on a long wait. A longer ask ends the attempt with the error, whose `retryAfterMs`
 * the pool uses to schedule the job's next run instead.
 */
export const RETRY_DEFAULTS = {
  maxWithinAttempt: 3,
  baseMs: 100,
  capMs: 2_000,
  maxRetryAfterMs: 10_000,
} as const

export interface RetryInfo {
  error: ProviderError
  /** 0-based index of the try that failed. */
  tryIndex: number
  delayMs: number
}

export interface RetryOptions {
  clock: Clock
  signal: AbortSignal
  sleep?: Sleep
  /** Tries within one attempt, the first included. Default 3. */
  maxWithinAttempt?: number
  baseMs?: number
  capMs?: number
  maxRetryAfterMs?: number
  /** Names the provider in the `ProviderAborted` raised when the signal fires between tries. */
  provider?: string
  /** Asked before each retry; `false` ends the attempt with the last error (e.g. the breaker opened). */
  shouldRetry?: (error: ProviderError, nextTryIndex: number) => boolean
  onRetry?: (info: RetryInfo) => void
}

/**
 * Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): uniform in
 * `[0, min(cap, base · 2^retryIndex))`. `retryIndex` is 0 for the first retry.
 */
export function backoffDelay(retryIndex: number, random: number, baseMs: number = RETRY_DEFAULTS.baseMs, capMs: number = RETRY_DEFAULTS.capMs): number {
  return random * Math.min(capMs, baseMs * 2 ** retryIndex)
}

/**
 * Runs `fn` until it succeeds, with up to `maxWithinAttempt` tries.
 * - Only `ProviderError`s with `retryable` are retried. Terminal errors, `ProviderAborted` and any
 *   non-provider error (a bug) are thrown at once.
 * - The wait before retry n is `max(backoffDelay(n), retryAfterMs)`: the provider's
 *   `Retry-After` is a floor, never shortened by jitter. If it exceeds `maxRetryAfterMs`, no
 *   retry is made here and the error is thrown, still carrying `retryAfterMs`.
 * - When `signal` aborts (before a try, during a try, or during the wait) it throws
 *   `ProviderAborted`.
 * After the last try the last error is thrown unchanged.
 */
export async function withRetries<T>(fn: (tryIndex: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const maxTries = Math.max(1, options.maxWithinAttempt ?? RETRY_DEFAULTS.maxWithinAttempt)
  const baseMs = options.baseMs ?? RETRY_DEFAULTS.baseMs
  const capMs = options.capMs ?? RETRY_DEFAULTS.capMs
  const maxRetryAfterMs = options.maxRetryAfterMs ?? RETRY_DEFAULTS.maxRetryAfterMs
  const sleep = options.sleep ?? defaultSleep
  const provider = options.provider ?? 'provider'
  const { signal, clock } = options

  for (let tryIndex = 0; ; tryIndex++) {
    if (signal.aborted) throw new ProviderAborted(provider, { cause: signal.reason })
    let error: Error
    try {
      return await fn(tryIndex)
    } catch (caught) {
      error = toError(caught)
    }
    if (error instanceof ProviderAborted) throw error
    if (signal.aborted) throw new ProviderAborted(provider, { cause: error })
    if (!(error instanceof ProviderError) || !error.retryable) throw error
    const nextTryIndex = tryIndex + 1
    if (nextTryIndex >= maxTries) throw error
    if (options.shouldRetry && !options.shouldRetry(error, nextTryIndex)) throw error
    const retryAfterMs = error.retryAfterMs
    if (retryAfterMs !== undefined && retryAfterMs > maxRetryAfterMs) throw error
    const delayMs = Math.max(backoffDelay(tryIndex, clock.random(), baseMs, capMs), retryAfterMs ?? 0)
    options.onRetry?.({ error, tryIndex, delayMs })
    try {
      await sleep(delayMs, signal)
    } catch (caught) {
      if (signal.aborted) throw new ProviderAborted(provider, { cause: error })
      throw toError(caught)
    }
  }
}
