import { toError } from '../errors.js'
import { callProvider, type CallProviderOptions, type CallProviderResult, type CallRequest } from './call-provider.js'
import { BreakerOpen, ProviderError } from './errors.js'
import type { ResolvedModel } from './registry.js'

export type ChainCallResult =
  | { ok: true; resolved: ResolvedModel; call: CallProviderResult }
  /** `resolved` is the last model that was tried (the first, when every breaker was open). */
  | { ok: false; resolved: ResolvedModel; error: Error }

export type ChainCallOptions = CallProviderOptions & {
  /** A model failed and the next one of the chain runs, for logs and metrics. */
  onFallback?: (from: ResolvedModel, to: ResolvedModel, error: Error) => void
}

/**
 * One attempt on a model and its fallbacks (SPEC §9), as `registry.chain(model)` lists them.
 * Each model gets a whole `callProvider` (breaker and retries). The next one runs when the
 * model's breaker is open, or when it failed retryably after its retries, but only while no
 * delta of this attempt has gone out: text a client has already seen must not be followed by
 * another model's text in the same answer, so from then on the failure is the attempt's.
 *
 * A terminal error (a 4xx, `insufficient_quota`) ends the chain: the provider understood the
 * request and refused it, so the request or the account is at fault. Another model would repeat
 * the mistake, or quietly route around a limit or a refusal that is meant to hold, and a
 * misconfiguration would stay hidden behind the fallback's answers.
 *
 * The request's `model` is replaced by each model's own name. When every model was refused by
 * its breaker the error is a `BreakerOpen` that retries at the earliest of them; when any model
 * was called, the last provider error is the attempt's.
 */
export async function callWithFallbacks(chain: readonly ResolvedModel[], request: Omit<CallRequest, 'model'>, options: ChainCallOptions): Promise<ChainCallResult> {
  const first = chain[0]
  if (!first) throw new Error('callWithFallbacks: the chain is empty')
  const { onFallback, ...callOptions } = options
  let refused: BreakerOpen | undefined
  let failed: { resolved: ResolvedModel; error: ProviderError } | undefined
  for (const [i, resolved] of chain.entries()) {
    try {
      const call = await callProvider(resolved, { ...request, model: resolved.model }, callOptions)
      return { ok: true, resolved, call }
    } catch (caught) {
      const error = toError(caught)
      if (error instanceof BreakerOpen) {
        if (!refused || error.retryAt < refused.retryAt) refused = error
      } else if (error instanceof ProviderError && error.retryable && (options.deltas?.sent ?? 0) === 0) {
        failed = { resolved, error }
      } else {
        return { ok: false, resolved, error }
      }
      const next = chain[i + 1]
      if (next) onFallback?.(resolved, next, error)
    }
  }
  if (failed) return { ok: false, ...failed }
  return { ok: false, resolved: first, error: refused as BreakerOpen }
}
