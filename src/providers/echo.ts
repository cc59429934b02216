import { setTimeout as delay } from 'node:timers/promises'
import { classifyHttpError, ProviderAborted } from './errors.js'
import type { Provider, ProviderRequest, ProviderResult } from './types.js'

/**
 * Per-model options of the built-in `echo` provider (from `AI_MODELS`), for demos and tests.
 * - `delay_ms`: wait this long before answering (the abort signal cuts it short).
 * - `fail_status`: answer with this HTTP status instead, classified exactly like a real
 *   provider's (503 → `ProviderUnavailable`, 429 → `ProviderRateLimited`, 401 → `ProviderRejected`).
 * - `fail_times`: only the first N calls for a given idempotency key fail, then it succeeds
 *   ("503 twice, then 200"). Without it, every call fails.
 */
export interface EchoOptions {
  delay_ms?: number
  fail_status?: number
  fail_times?: number
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
 */
export class EchoProvider implements Provider {
  readonly name = 'echo'
  readonly options: Readonly<EchoOptions>
  private readonly failures = new Map<string, number>()

  constructor(options: EchoOptions = {}) {
    this.options = { ...options }
  }

  async complete(request: ProviderRequest): Promise<ProviderResult> {
    const { signal } = request
    if (signal.aborted) throw new ProviderAborted(this.name, { cause: signal.reason })
    const delayMs = this.options.delay_ms ?? 0
    if (delayMs > 0) {
      try {
        await delay(delayMs, undefined, { signal })
      } catch (caught) {
        throw new ProviderAborted(this.name, { cause: caught })
      }
    }
    const failStatus = this.options.fail_status
    if (failStatus !== undefined && this.shouldFail(request.idempotencyKey)) {
      const body = JSON.stringify({ error: { type: 'echo_simulated_failure', message: `simulated HTTP ${failStatus}` } })
      throw classifyHttpError(this.name, failStatus, {}, body)
    }
    const prompt = request.input ?? (request.messages ?? []).map((m) => m.content).join('\n')
    const output = request.input ?? [...(request.messages ?? [])].reverse().find((m) => m.role === 'user')?.content ?? ''
    return {
      output,
      finish_reason: 'stop',
      usage: { input_tokens: estimateTokens(prompt), output_tokens: estimateTokens(output) },
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
