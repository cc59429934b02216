import { toError } from '../errors.js'
import type { CircuitBreaker } from './circuit-breaker.js'
import type { DeltaStream } from './delta-stream.js'
import { BreakerOpen, ProviderAborted, ProviderError, ProviderRejected } from './errors.js'
import { withRetries, type RetryOptions } from './retry.js'
import type { AttemptUsage, CallUsage, Provider, ProviderRequest, ProviderResult } from './types.js'

export { BreakerOpen } from './errors.js'

/**
 * The retry settings of one attempt (see `RetryOptions`); the provider's name and the breaker check
 * between tries are filled in here. `signal` is aborted on cancel, shutdown and a lost lease, and
 * replaces any signal on the request.
 */
export type CallProviderOptions = Omit<RetryOptions, 'provider' | 'shouldRetry'> & {
  /** Stream every try into this (see `DeltaStream` for the reset rule); without it nothing streams. */
  deltas?: DeltaStream
  /**
   * Receives the usage of each try that cost tokens or may have: every answer, and every failure
   * that carries `spent` (a broken stream, a timeout while the model ran). Refusals (non-2xx) and
   * failures to connect cost nothing and add nothing.
   */
  usage?: CallUsage[]
}

/** The provider request `callProvider` completes: the signal and the delta sink come from its options. */
export type CallRequest = Omit<ProviderRequest, 'signal' | 'onDelta'>

export interface CallProviderResult {
  result: ProviderResult
  /** Duration of the try that succeeded: the provider's own latency. */
  providerMs: number
  /** The whole call: every try and every backoff wait. */
  totalMs: number
  /** Tries made, the successful one included. */
  tries: number
}

/**
 * One attempt at a job's provider call, as the worker pool makes it:
 * 1. the breaker is asked first; if it refuses, `BreakerOpen` is thrown and nothing is sent
 *    (the pool leaves the job waiting until `err.retryAt` without spending an attempt);
 * 2. the call runs under `withRetries` (full-jitter backoff, `Retry-After` honoured);
 * 3. every try is reported to the breaker: a retryable error is a failure; any answer, a
 *    terminal 4xx included, is a success (the provider is reachable); an abort is neutral.
 *    Retries stop early when the breaker opens meanwhile.
 * With `options.deltas` every try streams; a retry after a try that sent text resets it first.
 * Throws the classified `ProviderError` (terminal, aborted, or the last retryable one).
 */
export async function callProvider(
  resolved: { provider: Provider; breaker: CircuitBreaker },
  request: CallRequest,
  options: CallProviderOptions,
): Promise<CallProviderResult> {
  const { provider, breaker } = resolved
  const { clock, signal, deltas, usage, ...retry } = options
  if (signal.aborted) throw new ProviderAborted(provider.name, { cause: signal.reason })
  const now = clock.now()
  if (!breaker.canRun(now)) throw new BreakerOpen(provider.name, breaker.key, breaker.retryAt(now), now)

  const started = clock.now()
  let tries = 0
  let providerMs = 0
  let reported = false
  try {
    const result = await withRetries(
      async (tryIndex) => {
        // The first try was admitted above; a later one goes only while the breaker is closed.
        tries = tryIndex + 1
        const tryStarted = clock.now()
        reported = false
        deltas?.beginTry()
        try {
          const answer = await provider.complete({ ...request, signal, ...(deltas ? { onDelta: deltas.push } : {}) })
          usage?.push({ model: request.model, ...answer.usage, reported: answer.usageReported })
          providerMs = clock.now() - tryStarted
          breaker.onSuccess()
          reported = true
          return answer
        } catch (caught) {
          const error = toError(caught)
          if (error instanceof ProviderError && error.spent) usage?.push({ model: request.model, ...error.spent.usage, reported: error.spent.reported })
          if (error instanceof ProviderRejected && error.status !== undefined) breaker.onSuccess()
          else if (error instanceof ProviderError && error.retryable) breaker.onFailure(clock.now())
          else breaker.onNeutral()
          reported = true
          throw error
        }
      },
      { ...retry, clock, signal, provider: provider.name, shouldRetry: () => breaker.state === 'closed' },
    )
    return { result, providerMs, totalMs: clock.now() - started, tries }
  } finally {
    // An abort during a backoff wait leaves a half-open probe reserved; free it.
    if (!reported) breaker.onNeutral()
  }
}

/** The usage of an attempt from the calls `callProvider` recorded (see `CallProviderOptions.usage`). */
export function attemptUsage(calls: readonly CallUsage[]): AttemptUsage {
  return { calls: calls.map((c) => ({ ...c })), unmetered: calls.filter((c) => !c.reported).length }
}
