import { ProviderUnavailable } from './errors.js'
import { asCount, asRecord, HttpProvider, postJson, type HttpProviderOptions } from './http.js'
import type { Provider, ProviderRequest, ProviderResult } from './types.js'

export const OPENAI_DEFAULT_URL = 'https://api.openai.com/v1'

export type OpenAIProviderOptions = HttpProviderOptions

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
export class OpenAIProvider extends HttpProvider implements Provider {
  readonly name = 'openai'

  constructor(options: OpenAIProviderOptions = {}) {
    super(options, OPENAI_DEFAULT_URL, '/chat/completions')
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

}
