import type { Dispatcher } from 'undici'
import { ProviderUnavailable } from './errors.js'
import { asCount, asRecord, createDispatcher, endpointUrl, postJson, type ProviderTimeouts } from './http.js'
import type { Provider, ProviderRequest, ProviderResult } from './types.js'

export const OPENAI_DEFAULT_URL = 'https://api.openai.com/v1'

export interface OpenAIProviderOptions {
  /** SDK form, `/chat/completions` is appended. Default `https://api.openai.com/v1`. */
  baseUrl?: string
  /** Sent as `Authorization: Bearer`; omitted when unset (local OpenAI-compatible servers). */
  apiKey?: string
  /** The model's configured `max_tokens`: used when the request sets none, and caps it otherwise. */
  maxTokens?: number
  timeouts?: Partial<ProviderTimeouts>
  /** A shared connection pool; when given, `close()` leaves it open for its owner. */
  dispatcher?: Dispatcher
  now?: () => number
}

/** Resolves `max_tokens` from the request and the model's configured value (default and cap). */
export function effectiveMaxTokens(requested: number | undefined, configured: number | undefined): number | undefined {
  if (requested === undefined) return configured
  return configured === undefined ? requested : Math.min(requested, configured)
}

/**
 * Any OpenAI-compatible Chat Completions server (OpenAI, vLLM, Ollama, LiteLLM, …).
 * The job's idempotency key is sent as `Idempotency-Key`, which such servers may honour, so a
 * retry after a lost answer does not run the completion twice.
 */
export class OpenAIProvider implements Provider {
  readonly name = 'openai'
  readonly baseUrl: string
  private readonly url: URL
  private readonly apiKey: string | undefined
  private readonly maxTokens: number | undefined
  private readonly dispatcher: Dispatcher
  private readonly ownsDispatcher: boolean
  private readonly now: () => number

  constructor(options: OpenAIProviderOptions = {}) {
    this.baseUrl = options.baseUrl ?? OPENAI_DEFAULT_URL
    this.url = endpointUrl(this.baseUrl, '/chat/completions')
    this.apiKey = options.apiKey
    this.maxTokens = options.maxTokens
    this.ownsDispatcher = options.dispatcher === undefined
    this.dispatcher = options.dispatcher ?? createDispatcher(options.timeouts)
    this.now = options.now ?? Date.now
  }

  async complete(request: ProviderRequest): Promise<ProviderResult> {
    const params = request.params ?? {}
    const body: Record<string, unknown> = {
      model: request.model,
      messages: request.messages ?? [{ role: 'user', content: request.input ?? '' }],
    }
    if (params.temperature !== undefined) body.temperature = params.temperature
    if (params.top_p !== undefined) body.top_p = params.top_p
    const maxTokens = effectiveMaxTokens(params.max_tokens, this.maxTokens)
    if (maxTokens !== undefined) body.max_tokens = maxTokens
    if (params.stop !== undefined) body.stop = params.stop

    const headers: Record<string, string> = { 'idempotency-key': request.idempotencyKey }
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`

    const answer = asRecord(
      await postJson({ provider: this.name, url: this.url, headers, body, signal: request.signal, dispatcher: this.dispatcher, now: this.now }),
    )
    const choices = answer?.choices
    const choice = Array.isArray(choices) ? asRecord(choices[0]) : undefined
    const message = asRecord(choice?.message)
    if (!choice || !message) throw new ProviderUnavailable(this.name, `${this.name}: answer has no choices[0].message`)
    const content = message.content
    const usage = asRecord(answer?.usage)
    return {
      // content is null when the model refused or only called tools; refusal text is the useful output then.
      output: typeof content === 'string' ? content : typeof message.refusal === 'string' ? message.refusal : '',
      finish_reason: typeof choice.finish_reason === 'string' ? choice.finish_reason : 'unknown',
      usage: { input_tokens: asCount(usage?.prompt_tokens), output_tokens: asCount(usage?.completion_tokens) },
    }
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close()
  }
}
