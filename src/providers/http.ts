import { Agent, request, type Dispatcher } from 'undici'
import { classifyHttpError, classifyTransportError, neverSent, ProviderError, ProviderUnavailable, streamBroken, UNREPORTED } from './errors.js'
import { SseParser, type SseEvent } from './sse.js'

/**
 * undici timeouts for provider calls. `headersMs` bounds the wait for the first byte of the
 * answer (a non-streaming completion arrives all at once, so this is the model's thinking time);
 * `bodyMs` is undici's idle time between body chunks, not a total. A stream's headers come at
 * once and its thinking happens between events, so `bodyMs` must outlast the longest pause a
 * model makes before or between tokens: it is twice `headersMs` (Anthropic also sends `ping`
 * events while it works, which count as chunks).
 */
export interface ProviderTimeouts {
  connectMs: number
  headersMs: number
  bodyMs: number
}

export const DEFAULT_TIMEOUTS: ProviderTimeouts = {
  connectMs: 5_000,
  headersMs: 60_000,
  bodyMs: 120_000,
}

/** A completion is a few hundred KB at most; anything near this is a wrong base URL. */
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024

/** One connection pool per base URL, with our timeouts. The caller owns it and closes it. */
export function createDispatcher(timeouts: Partial<ProviderTimeouts> = {}): Agent {
  const t = { ...DEFAULT_TIMEOUTS, ...timeouts }
  return new Agent({
    connect: { timeout: t.connectMs },
    headersTimeout: t.headersMs,
    bodyTimeout: t.bodyMs,
    maxResponseSize: MAX_RESPONSE_BYTES,
  })
}

/**
 * Appends an endpoint to a base URL in the official SDKs' form, keeping its path and query:
 * `https://api.openai.com/v1` + `/chat/completions`. Throws on a malformed base URL.
 */
export function endpointUrl(baseUrl: string, endpoint: string): URL {
  const url = new URL(baseUrl)
  url.pathname = `${url.pathname.replace(/\/+$/, '')}${endpoint}`
  return url
}

export interface PostJsonOptions {
  provider: string
  url: URL
  headers: Record<string, string>
  body: unknown
  signal: AbortSignal
  dispatcher: Dispatcher
  /** For `Retry-After` HTTP-dates. */
  now: () => number
}

/**
 * A transport failure, classified. It carries `spent` (the provider may have run the call) unless
 * it proves that the request never reached the provider.
 */
function transportError(provider: string, caught: unknown, signal: AbortSignal): ProviderError {
  const error = classifyTransportError(provider, caught, signal)
  if (!neverSent(caught)) error.spent ??= UNREPORTED
  return error
}

async function post(options: PostJsonOptions, accept: string): Promise<Dispatcher.ResponseData> {
  try {
    return await request(options.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept, ...options.headers },
      body: JSON.stringify(options.body),
      signal: options.signal,
      dispatcher: options.dispatcher,
    })
  } catch (caught) {
    throw transportError(options.provider, caught, options.signal)
  }
}

/** A non-2xx answer, classified (`classifyHttpError`); nothing was spent, the provider refused it. */
async function refusal(options: PostJsonOptions, response: Dispatcher.ResponseData): Promise<ProviderError> {
  let text: string
  try {
    text = await response.body.text()
  } catch (caught) {
    return classifyTransportError(options.provider, caught, options.signal)
  }
  return classifyHttpError(options.provider, response.statusCode, response.headers, text, options.now())
}

/** Reads and parses a 2xx JSON body; a failure carries `spent`, since the provider answered. */
async function readJson(options: PostJsonOptions, response: Dispatcher.ResponseData): Promise<unknown> {
  const { provider, signal } = options
  let text: string
  try {
    text = await response.body.text()
  } catch (caught) {
    throw transportError(provider, caught, signal)
  }
  try {
    return JSON.parse(text) as unknown
  } catch (caught) {
    const error = new ProviderUnavailable(provider, `${provider}: HTTP ${response.statusCode} with a body that is not JSON`, { status: response.statusCode, cause: caught })
    error.spent = UNREPORTED
    throw error
  }
}

/**
 * POSTs JSON and returns the parsed 2xx body. Every failure is a `ProviderError`: non-2xx via
 * `classifyHttpError`, transport failures via `classifyTransportError`, and a 2xx body that is
 * not JSON as `ProviderUnavailable` (a proxy's error page or a truncated answer).
 * Passing `signal` to undici makes an abort destroy the socket, so the server sees the close.
 */
export async function postJson(options: PostJsonOptions): Promise<unknown> {
  const response = await post(options, 'application/json')
  if (response.statusCode < 200 || response.statusCode >= 300) throw await refusal(options, response)
  return readJson(options, response)
}

export interface PostEventStreamOptions extends PostJsonOptions {
  /**
   * Takes each event as it arrives; returns true for the stream's terminal event, after which
   * nothing more is read. A throw ends the stream there (the socket is closed) with that error.
   */
  onEvent: (event: SseEvent) => boolean
}

/**
 * POSTs JSON asking for a `text/event-stream` answer and feeds its events to `onEvent` as they
 * arrive. Non-2xx answers and failures before the answer are classified as in `postJson`. Inside
 * a 2xx stream (SPEC §6 "errors inside a stream"), a broken connection or an end without the
 * terminal event is retryable (`ProviderUnavailable`; undici's idle `bodyTimeout` between two
 * chunks gives `ProviderTimeout`), and every such error carries `spent`.
 * Resolves `{ json }` when the server answered `application/json` instead (it ignored `stream`),
 * otherwise `undefined` once the terminal event was read.
 */
export async function postEventStream(options: PostEventStreamOptions): Promise<{ json: unknown } | undefined> {
  const { provider, signal } = options
  const response = await post(options, 'text/event-stream')
  if (response.statusCode < 200 || response.statusCode >= 300) throw await refusal(options, response)
  // Anything but JSON is read as a stream: some servers label their streams loosely, and a body
  // that is no stream (a proxy's error page) holds no terminal event and fails as truncated.
  const contentType = response.headers['content-type']
  if (/^\s*application\/(?:[\w.+-]+\+)?json\b/i.test(Array.isArray(contentType) ? contentType[0] ?? '' : contentType ?? '')) {
    return { json: await readJson(options, response) }
  }
  const parser = new SseParser()
  let handlerFailed = false
  try {
    // Leaving this loop early (the terminal event, or a throw) destroys the body, and with it the
    // socket unless the answer had already ended.
    for await (const chunk of response.body) {
      for (const event of parser.push(chunk as Buffer)) {
        let terminal: boolean
        try {
          terminal = options.onEvent(event)
        } catch (caught) {
          handlerFailed = true
          throw caught
        }
        if (terminal) return undefined
      }
    }
  } catch (caught) {
    if (caught instanceof ProviderError) {
      caught.spent ??= UNREPORTED
      throw caught
    }
    // Not the stream's fault (a bug in the handler or its sink): thrown as it is, never retried.
    if (handlerFailed) throw caught
    const error = classifyTransportError(provider, caught, signal)
    const broken = error instanceof ProviderUnavailable ? streamBroken(provider, error.message.replace(`${provider}: `, ''), { cause: caught }) : error
    broken.spent = UNREPORTED
    throw broken
  }
  const truncated = streamBroken(provider, 'the answer ended without its terminal event')
  truncated.spent = UNREPORTED
  throw truncated
}

/** Narrowing helpers for provider answers, which are untrusted JSON. */
export function asRecord(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
}

export function asCount(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.round(value) : 0
}

/** What every HTTP provider takes: its endpoint, key, token cap and connection pool. */
export interface HttpProviderOptions {
  /** The base URL in the form the official SDK takes; the provider appends its endpoint. */
  baseUrl?: string
  /** Omitted from requests when unset (local OpenAI-compatible servers need none). */
  apiKey?: string
  /** The model's configured `max_tokens`: used when the request sets none, and caps it otherwise. */
  maxTokens?: number
  timeouts?: Partial<ProviderTimeouts>
  /** A shared connection pool; when given, `close()` leaves it open for its owner. */
  dispatcher?: Dispatcher
  now?: () => number
}

/** The plumbing the OpenAI-compatible and Anthropic providers share: one POST endpoint over undici. */
export abstract class HttpProvider {
  readonly baseUrl: string
  protected readonly url: URL
  protected readonly apiKey: string | undefined
  protected readonly maxTokens: number | undefined
  protected readonly dispatcher: Dispatcher
  protected readonly now: () => number
  private readonly ownsDispatcher: boolean

  protected constructor(options: HttpProviderOptions, defaultUrl: string, endpoint: string) {
    this.baseUrl = options.baseUrl ?? defaultUrl
    this.url = endpointUrl(this.baseUrl, endpoint)
    this.apiKey = options.apiKey
    this.maxTokens = options.maxTokens
    this.ownsDispatcher = options.dispatcher === undefined
    this.dispatcher = options.dispatcher ?? createDispatcher(options.timeouts)
    this.now = options.now ?? Date.now
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close()
  }
}
