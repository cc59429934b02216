import { ProviderError, ProviderUnavailable, streamBroken, type SpentUsage } from './errors.js'
import { asCount, asRecord, HttpProvider, postEventStream, postJson, type HttpProviderOptions } from './http.js'
import { effectiveMaxTokens } from './openai.js'
import type { SseEvent } from './sse.js'
import type { Provider, ProviderRequest, ProviderResult, TextSink } from './types.js'

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

/** Input tokens as Anthropic bills them: prompt-cache reads and writes are input too, counted apart. */
function inputTokens(usage: Record<string, unknown>): number {
  return asCount(usage.input_tokens) + asCount(usage.cache_creation_input_tokens) + asCount(usage.cache_read_input_tokens)
}

/**
 * One Messages stream: `message_start` (with the input usage), `content_block_start`/`_delta`/
 * `_stop` (text in `text_delta`s; other delta types such as `input_json_delta` and
 * `thinking_delta` are not output), `message_delta` (stop reason and the cumulative output
 * usage), `message_stop`; `ping` keeps it alive, and an `error` event (e.g. `overloaded_error`)
 * ends it as a retryable failure.
 */
class MessageStream {
  private readonly parts: string[] = []
  private stopReason: string | undefined
  private input: number | undefined
  private output: number | undefined
  /** The final output count arrived (`message_delta`): the usage is the provider's own. */
  private final = false

  constructor(private readonly provider: string, private readonly onDelta: TextSink) {}

  /** Takes one event; true at `message_stop`. Throws the stream's own failures. */
  take(event: SseEvent): boolean {
    let parsed: unknown
    try {
      parsed = JSON.parse(event.data)
    } catch (caught) {
      throw streamBroken(this.provider, `a ${event.event} event holds data that is not JSON`, { cause: caught })
    }
    const data = asRecord(parsed)
    if (!data) throw streamBroken(this.provider, `a ${event.event} event holds JSON that is not an object`)
    const type = typeof data.type === 'string' ? data.type : event.event
    switch (type) {
      case 'message_start': {
        const usage = asRecord(asRecord(data.message)?.usage)
        if (usage) {
          this.input = inputTokens(usage)
          this.output = asCount(usage.output_tokens)
        }
        return false
      }
      case 'content_block_start': {
        const block = asRecord(data.content_block)
        if (block?.type === 'text') this.text(block.text)
        return false
      }
      case 'content_block_delta': {
        const delta = asRecord(data.delta)
        if (delta?.type === 'text_delta') this.text(delta.text)
        return false
      }
      case 'message_delta': {
        const delta = asRecord(data.delta)
        if (typeof delta?.stop_reason === 'string') this.stopReason = delta.stop_reason
        const usage = asRecord(data.usage)
        if (usage) {
          // Counts here are cumulative; newer API versions repeat the input counts as well.
          if (usage.input_tokens !== undefined) this.input = inputTokens(usage)
          this.output = asCount(usage.output_tokens)
          this.final = this.input !== undefined
        }
        return false
      }
      case 'message_stop':
        return true
      case 'error': {
        const error = asRecord(data.error)
        const code = typeof error?.type === 'string' ? error.type : undefined
        const message = typeof error?.message === 'string' ? error.message : 'an error event'
        throw streamBroken(this.provider, `${code ? `${code}: ` : ''}${message}`, code === undefined ? {} : { providerCode: code })
      }
      default:
        return false
    }
  }

  private text(value: unknown): void {
    if (typeof value !== 'string' || value === '') return
    this.parts.push(value)
    this.onDelta(value)
  }

  result(): ProviderResult {
    const stopReason = this.stopReason ?? 'unknown'
    return {
      output: this.parts.join(''),
      finish_reason: FINISH_REASONS[stopReason] ?? stopReason,
      usage: this.final ? { input_tokens: this.input ?? 0, output_tokens: this.output ?? 0 } : { input_tokens: 0, output_tokens: 0 },
      usageReported: this.final,
    }
  }

  /**
   * What a broken stream cost so far. Before `message_delta` only the input is known (the
   * output count of `message_start` is a placeholder): the counts are lower bounds, not reported.
   */
  spent(): SpentUsage {
    return { usage: { input_tokens: this.input ?? 0, output_tokens: this.output ?? 0 }, reported: this.final }
  }
}

/** Anthropic Messages API. 529 `overloaded_error` is retryable (see `classifyHttpError`), in a stream too. */
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
    const post = { provider: this.name, url: this.url, headers, body, signal: request.signal, dispatcher: this.dispatcher, now: this.now }

    const { onDelta } = request
    if (!onDelta) return this.parseMessage(await postJson(post))

    body.stream = true
    const stream = new MessageStream(this.name, onDelta)
    let answer: { json: unknown } | undefined
    try {
      answer = await postEventStream({ ...post, onEvent: (event) => stream.take(event) })
    } catch (caught) {
      // A call that may have run is charged what its stream reported before it failed.
      if (caught instanceof ProviderError && caught.spent) caught.spent = stream.spent()
      throw caught
    }
    if (!answer) return stream.result()
    // A proxy that ignored `stream` sent the whole message: it is one delta.
    const result = this.parseMessage(answer.json)
    if (result.output !== '') onDelta(result.output)
    return result
  }

  private parseMessage(json: unknown): ProviderResult {
    const answer = asRecord(json)
    const content = answer?.content
    const usage = asRecord(answer?.usage)
    if (!Array.isArray(content)) {
      const error = new ProviderUnavailable(this.name, `${this.name}: answer has no content array`)
      error.spent = usage
        ? { usage: { input_tokens: inputTokens(usage), output_tokens: asCount(usage.output_tokens) }, reported: true }
        : { usage: { input_tokens: 0, output_tokens: 0 }, reported: false }
      throw error
    }
    const output = content
      .map((block) => asRecord(block))
      .filter((block) => block?.type === 'text' && typeof block.text === 'string')
      .map((block) => block?.text as string)
      .join('')
    const stopReason = typeof answer?.stop_reason === 'string' ? answer.stop_reason : 'unknown'
    return {
      output,
      finish_reason: FINISH_REASONS[stopReason] ?? stopReason,
      usage: usage ? { input_tokens: inputTokens(usage), output_tokens: asCount(usage.output_tokens) } : { input_tokens: 0, output_tokens: 0 },
      usageReported: usage !== undefined,
    }
  }
}
