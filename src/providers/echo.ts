import { setTimeout as delay } from 'node:timers/promises'
import { classifyHttpError, ProviderAborted, streamBroken, type ProviderError } from './errors.js'
import type { Provider, ProviderRequest, ProviderResult } from './types.js'

/**
 * Per-model options of the built-in `echo` provider (from `AI_MODELS`), for demos and tests.
 * - `delay_ms`: wait this long before answering (the abort signal cuts it short).
 * - `delta_ms`: when streaming, wait this long between two words (default 0).
 * - `fail_status`: answer with this HTTP status instead, classified exactly like a real
 *   provider's (503 → `ProviderUnavailable`, 429 → `ProviderRateLimited`, 401 → `ProviderRejected`).
 * - `break_after`: fail the way a real stream breaks off instead: after this many words (at most
 *   all of them) the answer ends without its terminal event, a retryable `ProviderUnavailable`.
 *   A call without a delta sink breaks the same way, before answering.
 * - `fail_times`: only the first N calls for a given idempotency key fail (by `fail_status` or
 *   `break_after`), then it succeeds ("503 twice, then 200"). Without it, every call fails.
 */
export interface EchoOptions {
  delay_ms?: number
  delta_ms?: number
  fail_status?: number
  break_after?: number
  fail_times?: number
}

/**
 * The output in streamed pieces, one word each with the whitespace after it (leading whitespace
 * stays with the first word), so the pieces joined are exactly the output.
 */
export function echoWords(output: string): string[] {
  if (output === '') return []
  const words = output.split(/(?<=\s)(?=\S)/u)
  if (words.length > 1 && /^\s+$/u.test(words[0] as string)) words.splice(0, 2, `${words[0]}${words[1]}`)
  return words
}

/**
 * Keys whose failure count is remembered. The oldest are forgotten beyond this, so a benchmark
 * through a failing echo model cannot grow memory without bound.
 */
const MAX_TRACKED_KEYS = 10_000

/** Deterministic token estimate: one token per 4 UTF-8 bytes, rounded up (OpenAI's rule of thumb). */
export function estimateTokens(text: string): number {
  return Math.ceil(Buffer.byteLength(text, 'utf8') / 4)
}

/**
 * Answers with its input: the `input` string, or the content of the last `user` message ('' when
 * there is none). `finish_reason` is always `stop`. Usage: `input_tokens` estimates the prompt
 * (the `input`, or every message's content joined by "\n"); `output_tokens` estimates the output.
 * With a delta sink it streams the output word by word (`echoWords`).
 */
export class EchoProvider implements Provider {
  readonly name = 'echo'
  readonly options: Readonly<EchoOptions>
  private readonly failures = new Map<string, number>()

  constructor(options: EchoOptions = {}) {
    this.options = { ...options }
  }

  async complete(request: ProviderRequest): Promise<ProviderResult> {
    const { signal, onDelta } = request
    if (signal.aborted) throw new ProviderAborted(this.name, { cause: signal.reason })
    const delayMs = this.options.delay_ms ?? 0
    if (delayMs > 0) await this.wait(delayMs, signal)
    const { fail_status: failStatus, break_after: breakAfter } = this.options
    const failing = (failStatus !== undefined || breakAfter !== undefined) && this.shouldFail(request.idempotencyKey)
    if (failing && failStatus !== undefined) {
      const body = JSON.stringify({ error: { type: 'echo_simulated_failure', message: `simulated HTTP ${failStatus}` } })
      throw classifyHttpError(this.name, failStatus, {}, body)
    }
    const prompt = request.input ?? (request.messages ?? []).map((m) => m.content).join('\n')
    const output = request.input ?? [...(request.messages ?? [])].reverse().find((m) => m.role === 'user')?.content ?? ''
    const inputTokens = estimateTokens(prompt)
    const words = echoWords(output)
    // A broken call ran: it is charged like a real one whose final usage never came.
    const spentSoFar = (error: ProviderError, sent: string): ProviderError => {
      error.spent = { usage: { input_tokens: inputTokens, output_tokens: estimateTokens(sent) }, reported: false }
      return error
    }
    const breakAt = failing && breakAfter !== undefined ? Math.min(breakAfter, words.length) : undefined
    if (onDelta) {
      const deltaMs = this.options.delta_ms ?? 0
      let sent = ''
      for (let i = 0; i < words.length; i++) {
        if (i === breakAt) throw spentSoFar(streamBroken(this.name, `simulated break after ${i} deltas`), sent)
        if (i > 0 && deltaMs > 0) {
          try {
            await this.wait(deltaMs, signal)
          } catch (caught) {
            throw spentSoFar(caught as ProviderError, sent)
          }
        }
        const word = words[i] as string
        sent += word
        onDelta(word)
      }
      if (breakAt !== undefined) throw spentSoFar(streamBroken(this.name, `simulated break after ${words.length} deltas`), sent)
    } else if (breakAt !== undefined) {
      throw spentSoFar(streamBroken(this.name, `simulated break after ${breakAt} words`), words.slice(0, breakAt).join(''))
    }
    return {
      output,
      finish_reason: 'stop',
      usage: { input_tokens: inputTokens, output_tokens: estimateTokens(output) },
      usageReported: true,
    }
  }

  private async wait(ms: number, signal: AbortSignal): Promise<void> {
    try {
      await delay(ms, undefined, { signal })
    } catch (caught) {
      throw new ProviderAborted(this.name, { cause: caught })
    }
  }

  private shouldFail(key: string): boolean {
    const limit = this.options.fail_times
    if (limit === undefined) return true
    const seen = this.failures.get(key) ?? 0
    if (seen >= limit) return false
    this.failures.delete(key) // re-insert to keep the Map in least-recently-used order
    this.failures.set(key, seen + 1)
    if (this.failures.size > MAX_TRACKED_KEYS) {
      const oldest = this.failures.keys().next().value
      if (oldest !== undefined) this.failures.delete(oldest)
    }
    return true
  }
}
