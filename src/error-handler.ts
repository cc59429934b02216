import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { ApiError, isDatabaseUnavailable, toWordPressError } from './errors.js'

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

/**
 * The one error handler: every error becomes the WordPress REST shape `{ code, message, data }`.
 * Bad input is a 4xx, an unreachable database a 503 with Retry-After, and anything else a 500
 * whose details stay in the log with the request id the client also sees.
 */
export function wordPressErrorHandler(requestMaxBytes: number, onDatabaseUnavailable: () => void) {
  return (error: FastifyError | ApiError | Error, request: FastifyRequest, reply: FastifyReply) => {
    if (error instanceof ApiError) {
      for (const [k, v] of Object.entries(error.headers)) reply.header(k, v)
      return reply.code(error.status).send(toWordPressError(error.code, error.message, error.status, error.details))
    }
    const fe = error as FastifyError
    switch (fe.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return reply.code(413).send(toWordPressError('ai_payload_too_large', `The request body is larger than REQUEST_MAX_BYTES (${requestMaxBytes} bytes).`, 413))
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return reply.code(415).send(toWordPressError('ai_unsupported_media_type', 'Send the body as application/json.', 415))
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
      case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
        return reply.code(400).send(toWordPressError('ai_invalid_request', `body: ${fe.message}`, 400, { field: 'body', reason: fe.message }))
      default:
        break
    }
    if (fe.validation) {
      // Path parameters are job ids: one that is no id names no job, as `/jobs/abc` does not.
      if (fe.validationContext === 'params') return reply.code(404).send(toWordPressError('ai_not_found', 'No job with that id.', 404))
      const details = schemaErrorDetails(fe.validationContext, fe.validation[0] as SchemaError)
      return reply.code(400).send(toWordPressError('ai_invalid_request', `${details.field}: ${details.reason}`, 400, details))
    }
    if (fe.statusCode === 400 || error instanceof SyntaxError) {
      return reply.code(400).send(toWordPressError('ai_invalid_request', `body: ${error.message}`, 400, { field: 'body', reason: error.message }))
    }
    if (isDatabaseUnavailable(error)) {
      onDatabaseUnavailable()
      request.log.warn({ err: error }, 'database unavailable')
      reply.header('Retry-After', '5')
      return reply.code(503).send(toWordPressError('ai_unavailable', 'The job store is unavailable right now; try again shortly.', 503))
    }
    // 5xx details stay in the log, with the request id the client also sees.
    request.log.error({ err: error }, 'unhandled error')
    return reply.code(500).send(toWordPressError('ai_internal_error', `Internal error (request ${request.id}).`, 500))
  }
}
