import { Agent, request, type Dispatcher } from 'undici'
import { classifyHttpError, classifyTransportError, ProviderUnavailable } from './errors.js'

/**
 * undici timeouts for provider calls. `headersMs` bounds the wait for the first byte of the
 * answer (a non-streaming completion arrives all at once, so this is the model's thinking time);
 * `bodyMs` is undici's idle time between body chunks, not a total.
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
 * POSTs JSON and returns the parsed 2xx body. Every failure is a `ProviderError`: non-2xx via
 * `classifyHttpError`, transport failures via `classifyTransportError`, and a 2xx body that is
 * not JSON as `ProviderUnavailable` (a proxy's error page or a truncated answer).
 * Passing `signal` to undici makes an abort destroy the socket, so the server sees the close.
 */
export async function postJson(options: PostJsonOptions): Promise<unknown> {
  const { provider, signal } = options
  let statusCode: number
  let headers: Record<string, string | string[] | undefined>
  let text: string
  try {
    const response = await request(options.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...options.headers },
      body: JSON.stringify(options.body),
      signal,
      dispatcher: options.dispatcher,
    })
    statusCode = response.statusCode
    headers = response.headers
    text = await response.body.text()
  } catch (caught) {
    throw classifyTransportError(provider, caught, signal)
  }
  if (statusCode < 200 || statusCode >= 300) throw classifyHttpError(provider, statusCode, headers, text, options.now())
  try {
    return JSON.parse(text) as unknown
  } catch (caught) {
    throw new ProviderUnavailable(provider, `${provider}: HTTP ${statusCode} with a body that is not JSON`, { status: statusCode, cause: caught })
  }
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
