import { ProviderError, ProviderUnavailable, streamBroken, type SpentUsage } from './errors.js'
import { asCount, asRecord, HttpProvider, postEventStream, postJson, type HttpProviderOptions } from './http.js'
import type { SseEvent } from './sse.js'
import type { Provider, ProviderRequest, ProviderResult, ProviderUsage, TextSink } from './types.js'

export const OPENAI_DEFAULT_URL = 'https://api.openai.com/v1'

export type OpenAIProviderOptions = HttpProviderOptions

/** Resolves `max_tokens` from the request and the model's configured value (default and cap). */
export function effectiveMaxTokens(requested: number | undefined, configured: number | undefined): number | undefined {
  if (requested === undefined) return configured
  return configured === undefined ? requested : Math.min(requested, configured)
}

function usageOf(value: unknown): ProviderUsage | undefined {
  const usage = asRecord(value)
  return usage ? { input_tokens: asCount(usage.prompt_tokens), output_tokens: asCount(usage.completion_tokens) } : undefined
}

/**
 * One Chat Completions stream (`stream: true` with `stream_options.include_usage`): `data:`
 * events holding `chat.completion.chunk` objects, then `data: [DONE]`. The text is each chunk's
 * `choices[0].delta.content` (or `refusal`), the finish reason arrives on the last choice chunk,
 * and the usage on a final chunk with empty `choices` (every earlier chunk says `usage: null`).
 */
class ChatCompletionStream {
  private readonly parts: string[] = []
  private finishReason: string | undefined
  private usage: ProviderUsage | undefined

  constructor(private readonly provider: string, private readonly onDelta: TextSink) {}

  /** Takes one event; true at `[DONE]`. Throws the stream's own failures. */
  take(event: SseEvent): boolean {
    if (event.data.trim() === '[DONE]') return true
    let parsed: unknown
    try {
      parsed = JSON.parse(event.data)
    } catch (caught) {
      throw streamBroken(this.provider, 'an event holds data that is not JSON', { cause: caught })
    }
    const chunk = asRecord(parsed)
    if (!chunk) throw streamBroken(this.provider, 'an event holds JSON that is not an object')
    // OpenAI-compatible servers (vLLM, LiteLLM, Azure) report a failure mid-stream as `{ "error": … }`.
    if (chunk.error !== undefined && chunk.error !== null) {
      const error = asRecord(chunk.error)
      const code = typeof error?.code === 'string' ? error.code : typeof error?.type === 'string' ? error.type : undefined
      const message = typeof error?.message === 'string' ? error.message : typeof chunk.error === 'string' ? chunk.error : 'an error event'
      throw streamBroken(this.provider, message, code === undefined ? {} : { providerCode: code })
    }
    this.usage = usageOf(chunk.usage) ?? this.usage
    const choices = chunk.choices
    const choice = Array.isArray(choices) ? asRecord(choices[0]) : undefined
    const delta = asRecord(choice?.delta)
    for (const text of [delta?.content, delta?.refusal]) {
      if (typeof text === 'string' && text !== '') {
        this.parts.push(text)
        this.onDelta(text)
      }
    }
    if (typeof choice?.finish_reason === 'string') this.finishReason = choice.finish_reason
    return false
  }

  result(): ProviderResult {
    return {
      output: this.parts.join(''),
      finish_reason: this.finishReason ?? 'unknown',
      usage: this.usage ?? { input_tokens: 0, output_tokens: 0 },
      usageReported: this.usage !== undefined,
    }
  }

  /** What the call cost so far, for a stream that broke: the usage chunk comes last, so usually nothing. */
  spent(): SpentUsage {
    return { usage: this.usage ?? { input_tokens: 0, output_tokens: 0 }, reported: this.usage !== undefined }
  }
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
    const post = { provider: this.name, url: this.url, headers, body, signal: request.signal, dispatcher: this.dispatcher, now: this.now }

    const { onDelta } = request
    if (!onDelta) return this.parseCompletion(await postJson(post))

    body.stream = true
    // Without it a stream carries no usage at all (and the call would be charged its reservation).
    body.stream_options = { include_usage: true }
    const stream = new ChatCompletionStream(this.name, onDelta)
    let answer: { json: unknown } | undefined
    try {
      answer = await postEventStream({ ...post, onEvent: (event) => stream.take(event) })
    } catch (caught) {
      // A call that may have run is charged what its stream reported before it failed.
      if (caught instanceof ProviderError && caught.spent) caught.spent = stream.spent()
      throw caught
    }
    if (!answer) return stream.result()
    // The server ignored `stream` and sent the whole completion: it is one delta.
    const result = this.parseCompletion(answer.json)
    if (result.output !== '') onDelta(result.output)
    return result
  }

  private parseCompletion(json: unknown): ProviderResult {
    const answer = asRecord(json)
    const choices = answer?.choices
    const choice = Array.isArray(choices) ? asRecord(choices[0]) : undefined
    const message = asRecord(choice?.message)
    const usage = usageOf(answer?.usage)
    if (!choice || !message) {
      const error = new ProviderUnavailable(this.name, `${this.name}: answer has no choices[0].message`)
      error.spent = { usage: usage ?? { input_tokens: 0, output_tokens: 0 }, reported: usage !== undefined }
      throw error
    }
    const content = message.content
    return {
      // content is null when the model refused or only called tools; refusal text is the useful output then.
      output: typeof content === 'string' ? content : typeof message.refusal === 'string' ? message.refusal : '',
      finish_reason: typeof choice.finish_reason === 'string' ? choice.finish_reason : 'unknown',
      usage: usage ?? { input_tokens: 0, output_tokens: 0 },
      usageReported: usage !== undefined,
    }
  }
}
