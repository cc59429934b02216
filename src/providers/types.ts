import type { EchoOptions } from './echo.js'

export type ProviderName = 'echo' | 'openai' | 'anthropic'
export const PROVIDER_NAMES: readonly ProviderName[] = ['echo', 'openai', 'anthropic']

/** One entry of `AI_MODELS`. The echo-only options shape the built-in echo provider (see `EchoOptions`). */
export interface ModelConfig extends EchoOptions {
  provider: ProviderName
  url?: string
  api_key?: string
  max_tokens?: number
}

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
}

export interface ProviderUsage {
  input_tokens: number
  output_tokens: number
}

export interface ProviderResult {
  output: string
  finish_reason: string
  usage: ProviderUsage
}

export interface Provider {
  /** `echo`, `openai` or `anthropic`. */
  readonly name: string
  complete(request: ProviderRequest): Promise<ProviderResult>
}
