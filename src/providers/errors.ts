/**
 * Provider failures are classes, not strings (STYLE "Errors"): the worker branches on the class,
 * and `retryable` carries SPEC §6's triage so callers never re-derive it from status codes.
 *
 * - `ProviderTimeout`, `ProviderRateLimited`, `ProviderUnavailable`: retryable. Retried with
 *   backoff inside one attempt (`withRetries`), then the job is retried later.
 * - `ProviderRejected`: terminal (`insufficient_quota` and every other 4xx). The job fails at once;
 *   the message carries the status and the provider's code so it can become `error_text`.
 * - `ProviderAborted`: our own AbortSignal fired (cancel, shutdown, lost lease). Not a provider
 *   fault: never retried and never counted by the circuit breaker.
 * - `BreakerOpen`: the circuit breaker refused the call before anything was sent. Deliberately
 *   not a `ProviderError`: the pool leaves the job waiting and spends no attempt.
 *
 * A failed call may still have cost tokens (a stream that broke after its first deltas, a wait
 * for the answer that timed out while the model ran): such errors carry `spent`, which budgets
 * settle (SPEC §8).
 */
import { toError } from '../errors.js'
import type { ProviderUsage } from './types.js'

/** What a failed call may have cost: the usage the provider reported before it failed, if any. */
export interface SpentUsage {
  usage: ProviderUsage
  /** False when the call ended before the provider reported its final usage (charged its reservation). */
  reported: boolean
}

/** A call that may have run but reported nothing. */
export const UNREPORTED: Readonly<SpentUsage> = Object.freeze({ usage: Object.freeze({ input_tokens: 0, output_tokens: 0 }), reported: false })

export interface ProviderErrorOptions {
  /** HTTP status the provider answered with, when there was an answer. */
  status?: number
  /** The provider's own code, e.g. `insufficient_quota`, `overloaded_error`, `invalid_api_key`. */
  providerCode?: string
  /** How long the provider asked us to wait (`Retry-After` / `retry-after-ms`), in ms. */
  retryAfterMs?: number
  cause?: unknown
}

export class ProviderError extends Error {
  readonly provider: string
  readonly status: number | undefined
  readonly providerCode: string | undefined
  readonly retryable: boolean
  readonly retryAfterMs: number | undefined
  /**
   * Set when the provider ran the call, or may have, before it failed: it had accepted it (a 2xx)
   * or the failure cannot rule out that it reached the provider. Unset when the provider refused
   * it (any non-2xx answer) or it never left (a refused connection, DNS): nothing was spent.
   */
  spent: SpentUsage | undefined

  constructor(provider: string, message: string, retryable: boolean, options: ProviderErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'ProviderError'
    this.provider = provider
    this.status = options.status
    this.providerCode = options.providerCode
    this.retryable = retryable
    this.retryAfterMs = options.retryAfterMs
    this.spent = undefined
  }
}

/** Connect, header or body timeout, or an HTTP 408. Retryable. */
export class ProviderTimeout extends ProviderError {
  constructor(provider: string, message: string, options: ProviderErrorOptions = {}) {
    super(provider, message, true, options)
    this.name = 'ProviderTimeout'
  }
}

/** HTTP 429 other than `insufficient_quota`. Retryable, after `retryAfterMs` when the provider said. */
export class ProviderRateLimited extends ProviderError {
  constructor(provider: string, retryAfterMs: number | undefined, options: Omit<ProviderErrorOptions, 'retryAfterMs'> & { message?: string } = {}) {
    super(provider, options.message ?? `${provider}: rate limited`, true, { ...options, retryAfterMs })
    this.name = 'ProviderRateLimited'
  }
}

/** 5xx, 529, connection errors, errors while reading the body, malformed success bodies. Retryable. */
export class ProviderUnavailable extends ProviderError {
  constructor(provider: string, message: string, options: ProviderErrorOptions = {}) {
    super(provider, message, true, options)
    this.name = 'ProviderUnavailable'
  }
}

/** `insufficient_quota` and every other 4xx (and unexpected 3xx): retrying cannot help. Terminal. */
export class ProviderRejected extends ProviderError {
  constructor(provider: string, message: string, options: ProviderErrorOptions = {}) {
    super(provider, message, false, options)
    this.name = 'ProviderRejected'
  }
}

/** Our AbortSignal fired. Not a provider fault: not retried, not counted by the breaker. */
export class ProviderAborted extends ProviderError {
  constructor(provider: string, options: { cause?: unknown; message?: string } = {}) {
    super(provider, options.message ?? `${provider}: request aborted`, false, { cause: options.cause })
    this.name = 'ProviderAborted'
  }
}

/**
 * The provider's circuit breaker is open (or its one half-open probe is in flight), so nothing
 * was sent. The pool should leave the job waiting until `retryAt` without spending an attempt.
 */
export class BreakerOpen extends Error {
  readonly provider: string
  /** The breaker's key: provider name and base URL. */
  readonly breakerKey: string
  /** Epoch ms at which asking again makes sense. */
  readonly retryAt: number
  readonly retryAfterMs: number

  constructor(provider: string, breakerKey: string, retryAt: number, now: number) {
    super(`${provider}: circuit breaker open, retry after ${new Date(retryAt).toISOString()}`)
    this.name = 'BreakerOpen'
    this.provider = provider
    this.breakerKey = breakerKey
    this.retryAt = retryAt
    this.retryAfterMs = Math.max(0, retryAt - now)
  }
}

/** Response headers as undici gives them (lower-case record) or as a fetch `Headers`. */
export type HeaderSource = Headers | Record<string, string | string[] | number | undefined>

function headerValue(headers: HeaderSource, name: string): string | undefined {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name) ?? undefined
  const record = headers as Record<string, string | string[] | number | undefined>
  for (const [key, value] of Object.entries(record)) {
    if (key.toLowerCase() !== name) continue
    if (value === undefined) return undefined
    return Array.isArray(value) ? value[0] : String(value)
  }
  return undefined
}

const NUMBER = /^\d+(?:\.\d+)?$/

/**
 * How long the provider asked us to wait, in ms, or `undefined` when it did not say.
 * `retry-after-ms` (OpenAI) wins over `Retry-After` because it is more precise, as in the official
 * SDKs. `Retry-After` is delta-seconds (fractions accepted) or an HTTP-date, measured from `now`.
 * A date in the past means "now" (0).
 */
export function parseRetryAfterMs(headers: HeaderSource, now: number = Date.now()): number | undefined {
  const ms = headerValue(headers, 'retry-after-ms')?.trim()
  if (ms && NUMBER.test(ms)) return Math.ceil(Number(ms))
  const value = headerValue(headers, 'retry-after')?.trim()
  if (!value) return undefined
  if (NUMBER.test(value)) return Math.ceil(Number(value) * 1000)
  const date = Date.parse(value)
  if (Number.isNaN(date)) return undefined
  return Math.max(0, date - now)
}

interface ErrorBody {
  code: string | undefined
  type: string | undefined
  message: string | undefined
}

/**
 * Reads the error shapes of both APIs: OpenAI `{ error: { message, type, code } }`, Anthropic
 * `{ type: "error", error: { type, message } }`, plus the `{ error: "text" }` and top-level
 * `{ message }` that some OpenAI-compatible servers send.
 */
function parseErrorBody(bodyText: string): ErrorBody {
  let body: unknown
  try {
    body = JSON.parse(bodyText)
  } catch {
    const snippet = bodyText.replace(/\s+/g, ' ').trim()
    return { code: undefined, type: undefined, message: snippet === '' ? undefined : snippet }
  }
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : typeof v === 'number' ? String(v) : undefined)
  if (!body || typeof body !== 'object') return { code: undefined, type: undefined, message: undefined }
  const top = body as Record<string, unknown>
  const error = top.error
  if (typeof error === 'string') return { code: str(top.code), type: undefined, message: error }
  if (error && typeof error === 'object') {
    const e = error as Record<string, unknown>
    return { code: str(e.code), type: str(e.type), message: str(e.message) }
  }
  return { code: str(top.code), type: undefined, message: str(top.message) ?? str(top.detail) }
}

const MESSAGE_LIMIT = 300

/** The SPEC §6 retryable statuses. Other 5xx are treated alike (see `classifyHttpError`). */
export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504, 529])

/**
 * Sorts a non-2xx answer per SPEC §6:
 * - 408 → `ProviderTimeout`; 429 → `ProviderRateLimited`, unless `error.code` or `error.type` is
 *   `insufficient_quota` → `ProviderRejected` (terminal);
 * - 500, 502, 503, 504, 529 → `ProviderUnavailable`. Other 5xx (501, 505, Cloudflare's 520–524)
 *   are not in the SPEC list; they are server-side faults, so they are retryable too, bounded by
 *   `JOB_MAX_ATTEMPTS`;
 * - every other 4xx, and any 1xx/3xx (undici does not follow redirects; a redirect means a wrong
 *   base URL) → `ProviderRejected` (terminal).
 * `Retry-After` / `retry-after-ms` is attached to every class as `retryAfterMs`.
 * The message reads `provider: HTTP status code: provider message` and never holds request data.
 */
export function classifyHttpError(provider: string, status: number, headers: HeaderSource, bodyText: string, now: number = Date.now()): ProviderError {
  const body = parseErrorBody(bodyText)
  const providerCode = body.code ?? body.type
  const retryAfterMs = parseRetryAfterMs(headers, now)
  let detail = body.message ?? ''
  if (detail.length > MESSAGE_LIMIT) detail = `${detail.slice(0, MESSAGE_LIMIT)}…`
  const message = `${provider}: HTTP ${status}${providerCode ? ` ${providerCode}` : ''}${detail ? `: ${detail}` : ''}`
  const options: ProviderErrorOptions = { status, providerCode, retryAfterMs }

  if (status === 429) {
    if (body.code === 'insufficient_quota' || body.type === 'insufficient_quota') return new ProviderRejected(provider, message, options)
    return new ProviderRateLimited(provider, retryAfterMs, { status, providerCode, message })
  }
  if (status === 408) return new ProviderTimeout(provider, message, options)
  if (status >= 500) return new ProviderUnavailable(provider, message, options)
  return new ProviderRejected(provider, message, options)
}

/**
 * Failures that prove the request never reached the provider: no connection was made, or we
 * refused to send it. Anything else (a reset, a timeout waiting for the answer, an abort) may have
 * come after the provider started on it.
 */
const NEVER_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'ERR_INVALID_URL'])

/** True when a thrown transport error proves that the request never reached the provider. */
export function neverSent(caught: unknown): boolean {
  const code = (caught as { code?: unknown } | null)?.code
  return typeof code === 'string' && NEVER_SENT_CODES.has(code)
}

/**
 * A retryable error inside a 2xx event stream (SPEC §6 "errors inside a stream"): the stream
 * broke off, ended without its terminal event, carried an `error` event, or held data that is
 * not JSON. `providerCode` is the provider's error type for an error event (`overloaded_error`),
 * else `stream_broken`.
 */
export function streamBroken(provider: string, detail: string, options: { providerCode?: string; cause?: unknown } = {}): ProviderUnavailable {
  return new ProviderUnavailable(provider, `${provider}: stream broke off: ${detail}`, { providerCode: options.providerCode ?? 'stream_broken', cause: options.cause })
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT'])
/** Mistakes in how we built the request: retrying sends the same mistake again. */
const REQUEST_BUG_CODES = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED', 'ERR_INVALID_URL'])

/**
 * Sorts a thrown transport error (no HTTP answer, or the body broke off):
 * our signal fired → `ProviderAborted`; undici connect/headers/body timeouts → `ProviderTimeout`;
 * invalid arguments → `ProviderRejected`; anything else (socket reset, refused, DNS, closed
 * mid-body: SPEC's "errors inside a stream") → `ProviderUnavailable`.
 */
export function classifyTransportError(provider: string, caught: unknown, signal?: AbortSignal): ProviderError {
  if (caught instanceof ProviderError) return caught
  const error = toError(caught)
  if (signal?.aborted) return new ProviderAborted(provider, { cause: error })
  const code = (error as { code?: unknown }).code
  const codeText = typeof code === 'string' ? code : ''
  if (TIMEOUT_CODES.has(codeText)) return new ProviderTimeout(provider, `${provider}: ${error.message} (${codeText})`, { cause: error })
  if (REQUEST_BUG_CODES.has(codeText)) return new ProviderRejected(provider, `${provider}: ${error.message} (${codeText})`, { cause: error })
  return new ProviderUnavailable(provider, `${provider}: ${error.message}${codeText ? ` (${codeText})` : ''}`, { cause: error })
}
