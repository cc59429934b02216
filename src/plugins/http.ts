import { Ajv, type Options as AjvOptions } from 'ajv'
import fp from 'fastify-plugin'
import secureJson from 'secure-json-parse'
import { wordPressErrorHandler } from '../error-handler.js'
import { ApiError, toWordPressError } from '../errors.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `Cache-Control: private, no-store` on every answer of the route, errors included (lists, admin). */
    noStore?: boolean
  }
}

export interface HttpPluginOptions {
  /** A request body that has not arrived within this long is dropped with `408` (SPEC §4: 10 s). */
  bodyTimeoutMs?: number | undefined
}

/** SPEC §4: a request body that has not arrived within 10 s is dropped with 408. */
export const BODY_TIMEOUT_MS = 10_000

/** Far deeper than any body the API takes (metadata: 8 levels), far shallower than what overflows a stack. */
export const MAX_JSON_DEPTH = 64

/**
 * True when `text`, read as JSON, opens more than `max` arrays and objects inside one another.
 * Counted on the raw text before parsing, so a body nested thousands of levels deep is refused
 * before `JSON.parse` builds it, and never reaches a recursive `JSON.stringify` later.
 */
export function jsonDepthExceeds(text: string, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 0x5c) i++
      else if (c === 0x22) inString = false
    } else if (c === 0x22) {
      inString = true
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true
    } else if (c === 0x7d || c === 0x5d) {
      depth--
    }
  }
  return false
}

/**
 * JSON as Fastify parses it (prototype poisoning refused), bounded in depth; an empty body is no
 * body rather than an error, so `POST /jobs/:id/cancel` with a JSON content type and nothing else
 * is accepted, while a route whose schema needs a body still answers 400 naming it.
 */
export function parseJsonBody(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  if (text.trim() === '') return undefined
  if (jsonDepthExceeds(text, maxDepth)) {
    throw new ApiError('ai_invalid_request', `body: is nested more than ${maxDepth} levels deep`, { details: { field: 'body', reason: `nested more than ${maxDepth} levels` } })
  }
  try {
    return secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' })
  } catch (err) {
    throw new ApiError('ai_invalid_request', `body: is not valid JSON (${(err as Error).message})`, { details: { field: 'body', reason: 'not valid JSON' } })
  }
}

// Bodies are validated exactly as sent: an unknown field is a 400 (SPEC §4), never silently
// removed, and `input: 1` is never turned into "1" (which would change its input_hash). Query
// strings, path parameters and headers arrive as text, so those are coerced to their types.
const BODY_AJV: AjvOptions = { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, strict: false, verbose: true }
const TEXT_AJV: AjvOptions = { coerceTypes: 'array', removeAdditional: false, useDefaults: true, allErrors: false, strict: false, verbose: true }

/**
 * What every route shares at the HTTP level: the request id and `nosniff` on every answer, the
 * JSON parser, the body timeout, the schema validators and the one error handler.
 */
export const httpPlugin = fp<HttpPluginOptions>(async (app, options) => {
  const bodyAjv = new Ajv(BODY_AJV)
  const textAjv = new Ajv(TEXT_AJV)
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : textAjv).compile(schema))

  // Forwarded headers from a peer outside TRUST_PROXY are ignored (Fastify's trustProxy), so the
  // client address is the peer's; the first such request says so, naming the setting (SPEC §8).
  let warnedUntrustedForward = false
  app.addHook('onRequest', async (request, reply) => {
    reply.header('X-Request-Id', request.id)
    reply.header('X-Content-Type-Options', 'nosniff')
    if (request.routeOptions.config.noStore) reply.header('Cache-Control', 'private, no-store')
    if (!warnedUntrustedForward && request.headers['x-forwarded-for'] !== undefined && request.ip === request.socket.remoteAddress) {
      warnedUntrustedForward = true
      request.log.warn({ peer: request.socket.remoteAddress }, 'X-Forwarded-For from a peer outside TRUST_PROXY was ignored: every client counts as the peer\'s address. Set TRUST_PROXY to the reverse proxy\'s address (for example 127.0.0.1).')
    }
  })

  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as string))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  // A client that sends half a body and stalls would hold a connection for minutes: once the
  // body is due for longer than bodyTimeoutMs, the read fails with 408 and the connection closes.
  const bodyTimeoutMs = options.bodyTimeoutMs ?? BODY_TIMEOUT_MS
  const timers = new WeakMap<object, NodeJS.Timeout>()
  app.addHook('preParsing', async (request, reply, payload) => {
    const headers = request.headers
    if (headers['transfer-encoding'] === undefined && (headers['content-length'] === undefined || headers['content-length'] === '0')) return payload
    const timer = setTimeout(() => {
      reply.header('Connection', 'close')
      const error = new ApiError('ai_request_timeout', `The request body did not arrive within ${Math.round(bodyTimeoutMs / 1000)} s.`)
      // The body reader listens for errors while it reads; with nobody reading there is nothing to answer.
      if (payload.listenerCount('error') > 0) payload.emit('error', error)
      else request.raw.destroy()
    }, bodyTimeoutMs)
    timer.unref()
    timers.set(request, timer)
    const clear = () => clearTimeout(timer)
    payload.once('end', clear)
    payload.once('close', clear)
    return payload
  })
  app.addHook('onResponse', async (request) => {
    clearTimeout(timers.get(request))
  })

  app.setErrorHandler(wordPressErrorHandler(app.config.requestMaxBytes, () => app.metrics.databaseUnavailable.inc()))
  app.setNotFoundHandler((_request, reply) => {
    reply.code(404).send(toWordPressError('rest_no_route', 'No route was found matching the URL and request method.', 404))
  })
}, { name: 'http', dependencies: ['config', 'metrics'] })
