import type { ErrorAnswer } from '../error-handler.js'

/** OpenAI's error body (SPEC §11): what the OpenAI SDKs parse into their error classes. */
export interface OpenAiErrorBody {
  error: {
    message: string
    type: string
    code: string | null
    param: string | null
    /** A budget refusal's standing (SPEC §8 `data.budget`), for clients that want it. */
    budget?: unknown
  }
}

export interface OpenAiErrorAnswer {
  status: number
  body: OpenAiErrorBody
  headers: Record<string, string>
}

/** OpenAI's `type` and `code` for each gateway code; the status stays the gateway's. */
const BY_CODE: Record<string, { type: string; code: string | null }> = {
  ai_unauthorized: { type: 'invalid_request_error', code: 'invalid_api_key' },
  ai_forbidden: { type: 'invalid_request_error', code: 'permission_denied' },
  rest_cookie_invalid_nonce: { type: 'invalid_request_error', code: 'invalid_nonce' },
  ai_not_found: { type: 'invalid_request_error', code: 'not_found' },
  rest_no_route: { type: 'invalid_request_error', code: 'unknown_url' },
  ai_method_not_allowed: { type: 'invalid_request_error', code: 'method_not_allowed' },
  ai_request_timeout: { type: 'invalid_request_error', code: 'request_timeout' },
  ai_payload_too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  ai_unsupported_media_type: { type: 'invalid_request_error', code: 'unsupported_media_type' },
  ai_idempotency_key_reused: { type: 'invalid_request_error', code: 'idempotency_key_reused' },
  // OpenAI's own rate-limit answers carry `type: "requests"` (or "tokens").
  ai_rate_limited: { type: 'requests', code: 'rate_limit_exceeded' },
  ai_too_many_auth_failures: { type: 'requests', code: 'rate_limit_exceeded' },
  ai_too_many_streams: { type: 'requests', code: 'rate_limit_exceeded' },
  ai_budget_exhausted: { type: 'insufficient_quota', code: 'insufficient_quota' },
  ai_internal_error: { type: 'api_error', code: 'internal_error' },
  ai_unavailable: { type: 'api_error', code: 'service_unavailable' },
}

/** `params.max_tokens` (the job body's name) → `max_tokens` (the Chat Completions name); `body` → none. */
function paramOf(field: unknown): string | null {
  if (typeof field !== 'string' || field === '' || field === 'body') return null
  return field.startsWith('params.') ? field.slice('params.'.length) : field
}

/**
 * The gateway's answer to an error (src/error-handler.ts) in OpenAI's shape, for the `/openai/`
 * routes: the same status and headers, `type` and `code` from OpenAI's vocabulary, `param` for a
 * 400 and a 404 on the model. A budget refusal also says `x-should-retry: false`: the OpenAI SDKs
 * would otherwise retry a 429 whose window resets hours later.
 */
export function toOpenAiError(answer: ErrorAnswer): OpenAiErrorAnswer {
  const { status, body, headers } = answer
  const data = body.data as Record<string, unknown>
  const param = paramOf(data.field)
  const error: OpenAiErrorBody['error'] = { message: body.message, type: 'invalid_request_error', code: null, param: null }
  const mapped = BY_CODE[body.code]
  if (body.code === 'ai_invalid_request') {
    error.param = param
    error.code = typeof data.openai_code === 'string' ? data.openai_code : data.reason === 'is required' ? 'missing_required_parameter' : param === null ? null : 'invalid_value'
  } else if (body.code === 'ai_not_found' && param === 'model') {
    error.code = 'model_not_found'
    error.param = 'model'
  } else if (mapped) {
    error.type = mapped.type
    error.code = mapped.code
    if (body.code === 'ai_idempotency_key_reused') error.param = 'Idempotency-Key'
  } else if (status >= 500) {
    error.type = 'api_error'
  }
  const extra: Record<string, string> = {}
  if (body.code === 'ai_budget_exhausted') {
    error.budget = data.budget
    extra['x-should-retry'] = 'false'
  }
  return { status, body: { error }, headers: { ...headers, ...extra } }
}

/** An OpenAI error body written directly (a failed job, a broken stream). */
export function openAiError(message: string, type: string, code: string | null, param: string | null = null): OpenAiErrorBody {
  return { error: { message, type, code, param } }
}
