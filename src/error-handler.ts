import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { ApiError, isDatabaseUnavailable, toWordPressError, type WordPressError } from './errors.js'

interface SchemaError {
  instancePath: string
  keyword: string
  params: Record<string, unknown>
  message?: string
  parentSchema?: Record<string, unknown>
}

/** `/messages/0/role` → `messages[0].role`, as the API names fields. */
function fieldPath(instancePath: string): string {
  return instancePath.split('/').slice(1).map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path === '' ? part : `${path}.${part}`), '')
}

function headerName(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_m, dash: string, letter: string) => dash + letter.toUpperCase())
}

/**
 * A schema refusal in the WordPress shape with `data.field` and `data.reason` (SPEC §4: naming
 * the field and the reason). A schema may give its own reason as `x-error`.
 */
export function schemaErrorDetails(context: string | undefined, error: SchemaError): { field: string; reason: string } {
  let field = fieldPath(error.instancePath)
  const child = error.keyword === 'additionalProperties' ? error.params.additionalProperty
    : error.keyword === 'required' ? error.params.missingProperty : undefined
  if (typeof child === 'string') field = field === '' ? child : `${field}.${child}`
  if (context === 'headers') field = headerName(field)
  if (field === '') field = context === 'body' || context === undefined ? 'body' : context
  const own = error.parentSchema?.['x-error']
  const reason = error.keyword === 'additionalProperties' ? 'is not a known field'
    : error.keyword === 'required' ? 'is required'
      : typeof own === 'string' ? own : (error.message ?? 'is not valid')
  return { field, reason }
}

/** What the one error handler answers for an error: the status, the WordPress body and any headers. */
export interface ErrorAnswer {
  status: number
  body: WordPressError
  headers: Record<string, string>
}

/**
 * Sorts every error the way the one error handler answers it: bad input is a 4xx, an unreachable
 * database a 503 with Retry-After, and anything else a 500 whose details stay in the log with the
 * request id the client also sees. Routes that answer in another shape (the OpenAI-compatible
 * ones) render the same answer their own way.
 */
export function describeError(error: FastifyError | ApiError | Error, request: FastifyRequest, requestMaxBytes: number, onDatabaseUnavailable: () => void): ErrorAnswer {
  const answer = (body: WordPressError, headers: Record<string, string> = {}): ErrorAnswer => ({ status: body.data.status, body, headers })
  if (error instanceof ApiError) return answer(toWordPressError(error.code, error.message, error.status, error.details), error.headers)
  const fe = error as FastifyError
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return answer(toWordPressError('ai_payload_too_large', `The request body is larger than REQUEST_MAX_BYTES (${requestMaxBytes} bytes).`, 413))
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return answer(toWordPressError('ai_unsupported_media_type', 'Send the body as application/json.', 415))
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return answer(toWordPressError('ai_invalid_request', `body: ${fe.message}`, 400, { field: 'body', reason: fe.message }))
    default:
      break
  }
  if (fe.validation) {
    // Path parameters are job ids: one that is no id names no job, as `/jobs/abc` does not.
    if (fe.validationContext === 'params') return answer(toWordPressError('ai_not_found', 'No job with that id.', 404))
    const details = schemaErrorDetails(fe.validationContext, fe.validation[0] as SchemaError)
    return answer(toWordPressError('ai_invalid_request', `${details.field}: ${details.reason}`, 400, details))
  }
  if (fe.statusCode === 400 || error instanceof SyntaxError) {
    return answer(toWordPressError('ai_invalid_request', `body: ${error.message}`, 400, { field: 'body', reason: error.message }))
  }
  if (isDatabaseUnavailable(error)) {
    onDatabaseUnavailable()
    request.log.warn({ err: error }, 'database unavailable')
    return answer(toWordPressError('ai_unavailable', 'The job store is unavailable right now; try again shortly.', 503), { 'Retry-After': '5' })
  }
  // 5xx details stay in the log, with the request id the client also sees.
  request.log.error({ err: error }, 'unhandled error')
  return answer(toWordPressError('ai_internal_error', `Internal error (request ${request.id}).`, 500))
}

/** The one error handler: every error becomes the WordPress REST shape `{ code, message, data }`. */
export function wordPressErrorHandler(requestMaxBytes: number, onDatabaseUnavailable: () => void) {
  return (error: FastifyError | ApiError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const { status, body, headers } = describeError(error, request, requestMaxBytes, onDatabaseUnavailable)
    return reply.code(status).headers(headers).send(body)
  }
}
