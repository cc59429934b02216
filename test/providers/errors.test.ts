import { describe, expect, it } from 'vitest'
import {
  classifyHttpError,
  classifyTransportError,
  parseRetryAfterMs,
  ProviderAborted,
  ProviderRateLimited,
  ProviderRejected,
  ProviderTimeout,
  ProviderUnavailable,
} from '../../src/providers/errors.js'

const NOW = Date.UTC(2025, 0, 2, 3, 4, 5)

describe('classifyHttpError (SPEC §6 triage)', () => {
  it.each([
    [408, ProviderTimeout],
    [429, ProviderRateLimited],
    [500, ProviderUnavailable],
    [502, ProviderUnavailable],
    [503, ProviderUnavailable],
    [504, ProviderUnavailable],
    [529, ProviderUnavailable],
  ])('%i is retryable', (status, cls) => {
    const error = classifyHttpError('openai', status, {}, '')
    expect(error).toBeInstanceOf(cls)
    expect(error.retryable).toBe(true)
    expect(error.status).toBe(status)
  })

  it.each([400, 401, 403, 404, 409, 413, 422])('%i is terminal', (status) => {
    const error = classifyHttpError('openai', status, {}, '{"error":{"message":"nope","type":"invalid_request_error","code":"bad"}}')
    expect(error).toBeInstanceOf(ProviderRejected)
    expect(error.retryable).toBe(false)
    expect(error.providerCode).toBe('bad')
  })

  it('429 insufficient_quota is terminal, whether in error.code or error.type', () => {
    const byCode = classifyHttpError('openai', 429, {}, JSON.stringify({ error: { message: 'You exceeded your current quota', type: 'requests', code: 'insufficient_quota' } }))
    const byType = classifyHttpError('openai', 429, {}, JSON.stringify({ error: { message: 'quota', type: 'insufficient_quota', code: null } }))
    for (const error of [byCode, byType]) {
      expect(error).toBeInstanceOf(ProviderRejected)
      expect(error.retryable).toBe(false)
    }
    expect(byCode.message).toBe('openai: HTTP 429 insufficient_quota: You exceeded your current quota')
  })

  it('reads the Anthropic error shape', () => {
    const error = classifyHttpError('anthropic', 529, {}, JSON.stringify({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }))
    expect(error).toBeInstanceOf(ProviderUnavailable)
    expect(error.providerCode).toBe('overloaded_error')
    expect(error.message).toBe('anthropic: HTTP 529 overloaded_error: Overloaded')
  })

  it('treats unlisted 5xx as retryable and a redirect as terminal', () => {
    expect(classifyHttpError('openai', 520, {}, '<html>').retryable).toBe(true)
    expect(classifyHttpError('openai', 301, {}, '')).toBeInstanceOf(ProviderRejected)
  })

  it('attaches Retry-After to the error', () => {
    const error = classifyHttpError('openai', 429, { 'retry-after': '7' }, '{}', NOW)
    expect(error).toBeInstanceOf(ProviderRateLimited)
    expect(error.retryAfterMs).toBe(7000)
    expect(classifyHttpError('openai', 503, { 'retry-after-ms': '250' }, '').retryAfterMs).toBe(250)
  })
})

describe('parseRetryAfterMs', () => {
  it('reads seconds, fractions, HTTP-dates and retry-after-ms', () => {
    expect(parseRetryAfterMs({ 'retry-after': '3' }, NOW)).toBe(3000)
    expect(parseRetryAfterMs({ 'Retry-After': '1.5' }, NOW)).toBe(1500)
    expect(parseRetryAfterMs({ 'retry-after': new Date(NOW + 4000).toUTCString() }, NOW)).toBe(4000)
    expect(parseRetryAfterMs({ 'retry-after': new Date(NOW - 4000).toUTCString() }, NOW)).toBe(0)
    expect(parseRetryAfterMs(new Headers({ 'retry-after-ms': '120', 'retry-after': '9' }), NOW)).toBe(120)
  })

  it('ignores missing and malformed values', () => {
    expect(parseRetryAfterMs({}, NOW)).toBeUndefined()
    expect(parseRetryAfterMs({ 'retry-after': 'soon' }, NOW)).toBeUndefined()
    expect(parseRetryAfterMs({ 'retry-after-ms': '-5' }, NOW)).toBeUndefined()
  })
})

describe('classifyTransportError', () => {
  it('sorts undici errors by code', () => {
    const timeout = Object.assign(new Error('Headers Timeout Error'), { code: 'UND_ERR_HEADERS_TIMEOUT' })
    const reset = Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' })
    expect(classifyTransportError('openai', timeout)).toBeInstanceOf(ProviderTimeout)
    expect(classifyTransportError('openai', reset)).toBeInstanceOf(ProviderUnavailable)
  })

  it('an aborted signal wins over whatever undici threw', () => {
    const controller = new AbortController()
    controller.abort()
    const error = classifyTransportError('openai', Object.assign(new Error('closed'), { code: 'UND_ERR_SOCKET' }), controller.signal)
    expect(error).toBeInstanceOf(ProviderAborted)
    expect(error.retryable).toBe(false)
  })
})
