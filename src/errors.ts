/**
 * The one registry of error codes. Every error a client sees is rendered in the WordPress REST
 * shape `{ code, message, data: { status } }` so `wp.apiFetch` callers read it as usual.
 */
export const ERROR_CODES = {
  ai_invalid_request: 400,
  ai_unauthorized: 401,
  ai_forbidden: 403,
  rest_cookie_invalid_nonce: 403,
  ai_invalid_signature: 403,
  ai_not_found: 404,
  rest_no_route: 404,
  ai_method_not_allowed: 405,
  ai_request_timeout: 408,
  ai_job_finished: 409,
  ai_payload_too_large: 413,
  ai_unsupported_media_type: 415,
  ai_idempotency_key_reused: 422,
  ai_rate_limited: 429,
  ai_too_many_auth_failures: 429,
  ai_too_many_streams: 429,
  ai_budget_exhausted: 429,
  ai_internal_error: 500,
  ai_unavailable: 503,
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class ApiError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly headers: Record<string, string>
  readonly details: Record<string, unknown> | undefined

  constructor(code: ErrorCode, message: string, options: { headers?: Record<string, string>; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, { cause: options.cause })
    this.name = 'ApiError'
    this.code = code
    this.status = ERROR_CODES[code]
    this.headers = options.headers ?? {}
    this.details = options.details
  }
}

export interface WordPressError {
  code: string
  message: string
  data: { status: number } & Record<string, unknown>
}

export function toWordPressError(code: string, message: string, status: number, details?: Record<string, unknown>): WordPressError {
  return { code, message, data: { ...details, status } }
}

/** Every caught value goes through here, so code that branches on errors sees an Error. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value
  if (typeof value === 'string') return new Error(value)
  try {
    return new Error(JSON.stringify(value))
  } catch {
    return new Error(String(value))
  }
}

/** True for errors that mean the database cannot be reached right now (as opposed to bad SQL). */
export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: string; errno?: number; fatal?: boolean } | null
  if (!e || typeof e !== 'object') return false
  const codes = new Set([
    'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
    'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'ER_CON_COUNT_ERROR', 'ER_SERVER_SHUTDOWN',
    'ER_QUERY_INTERRUPTED', 'POOL_CLOSED', 'SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_IOERR', 'SQLITE_CANTOPEN',
  ])
  if (e.code && codes.has(e.code)) return true
  if (e.fatal === true) return true
  // mysql2 wraps connect timeouts and handshake errors without a code.
  const message = (err as Error).message ?? ''
  return /connect ETIMEDOUT|Connection lost|Can't add new command when connection is in closed state|Pool is closed/.test(message)
}
