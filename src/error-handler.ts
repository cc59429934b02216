import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { ApiError, isDatabaseUnavailable, toWordPressError } from './errors.js'

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
        return reply.code(400).send(toWordPressError('ai_invalid_request', `body: ${fe.message}`, 400, { field: 'body' }))
      default:
        break
    }
    if (fe.validation) {
      return reply.code(400).send(toWordPressError('ai_invalid_request', fe.message, 400))
    }
    if (fe.statusCode === 400 || error instanceof SyntaxError) {
      return reply.code(400).send(toWordPressError('ai_invalid_request', `body: ${error.message}`, 400, { field: 'body' }))
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
