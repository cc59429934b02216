import type { EchoOptions } from './echo.js'

export type ProviderName = 'echo' | 'openai' | 'anthropic'
export const PROVIDER_NAMES: readonly ProviderName[] = ['echo', 'openai', 'anthropic']

/** One entry of `AI_MODELS`. The echo-only options shape the built-in echo provider (see `EchoOptions`). */
export interface ModelConfig extends EchoOptions {
  provider: ProviderName
  url?: string
  api_key?: string
  max_tokens?: number
  /**
   * Models to run on, in order, when this one fails retryably (after its retries within the
   * attempt) or its breaker is open, before any text was streamed (SPEC §9). Each named model's
   * own `fallback` follows it. Validated at start-up: allowed models only, no cycles.
   */
  fallback?: string[]
}

/** Receives a streamed completion's text as it arrives; the pieces joined in order are the output. */
export type TextSink = (text: string) => void

/** What a provider is asked: the stored request, with the model resolved. */
export interface ProviderRequest {
  model: string
  input?: string
  messages?: { role: 'system' | 'user' | 'assistant'; content: string }[]
  params?: { temperature?: number; top_p?: number; max_tokens?: number; stop?: string | string[] }
  /** The job's stored 64-hex idempotency key, sent where the provider accepts one. */
  idempotencyKey: string
  /** Aborted on cancel, on shutdown and when the lease is lost. */
  signal: AbortSignal
  /**
   * When given, the provider streams (OpenAI `stream: true`, Anthropic message events, echo word
   * by word) and hands each piece of text here as it arrives. Never called with `''`.
   */
  onDelta?: TextSink
}

export interface ProviderUsage {
  input_tokens: number
  output_tokens: number
}

export interface ProviderResult {
  output: string
  finish_reason: string
  /** The provider's own counts; zeros when `usageReported` is false. */
  usage: ProviderUsage
  /**
   * False when the answer carried no usage (a stream without its usage event, a server that
   * omits it). Nothing is estimated in its place: budgets charge such a call its reservation.
   */
  usageReported: boolean
}

/**
 * What one call to a provider may have cost, as the provider said. `reported: false` means the
 * provider ran (or may have run) the call without reporting its final usage: the counts are then
 * only what was known when it ended (lower bounds, often 0), and budgets charge the call its
 * reservation instead.
 */
export interface CallUsage {
  /** The model the call ran on: budgets bill each call at its own model. */
  model: string
  input_tokens: number
  output_tokens: number
  reported: boolean
}

/** The usage of every provider call of one attempt: retries, broken streams and fallbacks included. */
export interface AttemptUsage {
  calls: CallUsage[]
  /** How many of `calls` have `reported: false`. */
  unmetered: number
}

export interface Provider {
  /** `echo`, `openai` or `anthropic`. */
  readonly name: string
  /** Streams when `request.onDelta` is given; otherwise answers at once. */
  complete(request: ProviderRequest): Promise<ProviderResult>
}
