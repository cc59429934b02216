import { ProviderUnavailable } from './errors.js'
import { asCount, asRecord, HttpProvider, postJson, type HttpProviderOptions } from './http.js'
import { effectiveMaxTokens } from './openai.js'
import type { Provider, ProviderRequest, ProviderResult } from './types.js'

export const ANTHROPIC_DEFAULT_URL = 'https://api.anthropic.com'
export const ANTHROPIC_VERSION = '2023-06-01'
/** The Messages API requires `max_tokens`; used when neither the request nor the model sets one. */
export const ANTHROPIC_FALLBACK_MAX_TOKENS = 1024

export type AnthropicProviderOptions = HttpProviderOptions

/**
 * `stop_reason` in the Chat Completions vocabulary, so clients read one set of values whatever
 * the provider: `end_turn`/`stop_sequence` → `stop`, `max_tokens` → `length`,
 * `tool_use` → `tool_calls`, `refusal` → `content_filter`; anything newer passes through as is.
 */
const FINISH_REASONS: Record<string, string> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  max_tokens: 'length',
  tool_use: 'tool_calls',
  refusal: 'content_filter',
}

/** Anthropic Messages API. 529 `overloaded_error` is retryable (see `classifyHttpError`). */
export class AnthropicProvider extends HttpProvider implements Provider {
  readonly name = 'anthropic'

  constructor(options: AnthropicProviderOptions = {}) {
    super(options, ANTHROPIC_DEFAULT_URL, '/v1/messages')
  }

  async complete(request: ProviderRequest): Promise<ProviderResult> {
    const params = request.params ?? {}
    const all = request.messages ?? [{ role: 'user' as const, content: request.input ?? '' }]
    // The Messages API has no system role: system prompts go to the top-level `system` string.
    const system = all.filter((m) => m.role === 'system').map((m) => m.content)
    const body: Record<string, unknown> = {
      model: request.model,
      max_tokens: effectiveMaxTokens(params.max_tokens, this.maxTokens) ?? ANTHROPIC_FALLBACK_MAX_TOKENS,
      messages: all.filter((m) => m.role !== 'system').map((m) => ({ role: m.role, content: m.content })),
    }
    if (system.length > 0) body.system = system.join('\n\n')
    if (params.temperature !== undefined) body.temperature = params.temperature
    if (params.top_p !== undefined) body.top_p = params.top_p
    if (params.stop !== undefined) body.stop_sequences = typeof params.stop === 'string' ? [params.stop] : params.stop

    const headers: Record<string, string> = { 'anthropic-version': ANTHROPIC_VERSION }
    if (this.apiKey) headers['x-api-key'] = this.apiKey

    const answer = asRecord(
      await postJson({ provider: this.name, url: this.url, headers, body, signal: request.signal, dispatcher: this.dispatcher, now: this.now }),
    )
    const content = answer?.content
    if (!Array.isArray(content)) throw new ProviderUnavailable(this.name, `${this.name}: answer has no content array`)
    const output = content
      .map((block) => asRecord(block))
      .filter((block) => block?.type === 'text' && typeof block.text === 'string')
      .map((block) => block?.text as string)
      .join('')
    const stopReason = typeof answer?.stop_reason === 'string' ? answer.stop_reason : 'unknown'
    const usage = asRecord(answer?.usage)
    return {
      output,
      finish_reason: FINISH_REASONS[stopReason] ?? stopReason,
      usage: {
        // Prompt-cache reads and writes are billed input too, and the API counts them apart.
        input_tokens: asCount(usage?.input_tokens) + asCount(usage?.cache_creation_input_tokens) + asCount(usage?.cache_read_input_tokens),
        output_tokens: asCount(usage?.output_tokens),
      },
    }
  }

}
