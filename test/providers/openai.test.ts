import type { AddressInfo } from 'node:net'
import { createServer } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { ProviderAborted, ProviderRateLimited, ProviderRejected, ProviderTimeout, ProviderUnavailable } from '../../src/providers/errors.js'
import { OpenAIProvider } from '../../src/providers/openai.js'
import { KEY, recordingSleep, sendJson, sequence, startFakeServer, type FakeHandler, type FakeServer } from './fake-server.js'

const completion = {
  id: 'chatcmpl-1',
  object: 'chat.completion',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello from the fake' }, finish_reason: 'length' }],
  usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 },
}

const servers: FakeServer[] = []
const providers: OpenAIProvider[] = []

async function setup(handler: FakeHandler, options: { maxTokens?: number; timeouts?: { headersMs?: number }; now?: () => number } = {}) {
  const server = await startFakeServer(handler)
  servers.push(server)
  const provider = new OpenAIProvider({ baseUrl: `${server.url}/v1`, apiKey: 'sk-test', ...options })
  providers.push(provider)
  return { server, provider }
}

/** Answers the queued statuses in turn (503, 503, …) and the completion after them. */
function failThenSucceed(...failures: { status: number; body?: unknown; headers?: Record<string, string> }[]): FakeHandler {
  return (_seen, res) => {
    const failure = failures.shift()
    if (failure) sendJson(res, failure.status, failure.body ?? { error: { message: 'down', type: 'server_error' } }, failure.headers)
    else sendJson(res, 200, completion)
  }
}

const signal = () => new AbortController().signal

afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()))
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

describe('openai provider', () => {
  it('posts the chat completion and parses output, finish reason and usage', async () => {
    const { server, provider } = await setup((_seen, res) => sendJson(res, 200, completion), { maxTokens: 100 })
    const result = await provider.complete({
      model: 'gpt-test',
      input: 'Say hello',
      params: { temperature: 0.2, top_p: 0.9, max_tokens: 500, stop: ['END'] },
      idempotencyKey: KEY,
      signal: signal(),
    })
    expect(result).toEqual({ output: 'Hello from the fake', finish_reason: 'length', usage: { input_tokens: 12, output_tokens: 5 }, usageReported: true })
    expect(server.requests).toHaveLength(1)
    const seen = server.requests[0]!
    expect(seen.method).toBe('POST')
    expect(seen.path).toBe('/v1/chat/completions')
    expect(seen.headers.authorization).toBe('Bearer sk-test')
    expect(seen.headers['idempotency-key']).toBe(KEY)
    expect(seen.headers['content-type']).toBe('application/json')
    expect(seen.body).toEqual({
      model: 'gpt-test',
      messages: [{ role: 'user', content: 'Say hello' }],
      temperature: 0.2,
      top_p: 0.9,
      max_tokens: 100, // the model's configured max_tokens caps the request's
      stop: ['END'],
    })
  })

  it('passes messages through and omits unset params', async () => {
    const { server, provider } = await setup((_seen, res) => sendJson(res, 200, completion))
    const messages = [
      { role: 'system' as const, content: 'terse' },
      { role: 'user' as const, content: 'hi' },
    ]
    await provider.complete({ model: 'm', messages, idempotencyKey: KEY, signal: signal() })
    expect(server.requests[0]!.body).toEqual({ model: 'm', messages })
  })

  it('503 twice, then 200: one call succeeds after two full-jitter retries', async () => {
    const { server, provider } = await setup(failThenSucceed({ status: 503 }, { status: 503 }))
    const { sleep, delays } = recordingSleep()
    const breaker = new CircuitBreaker('openai test')
    const outcome = await callProvider(
      { provider, breaker },
      { model: 'gpt-test', input: 'x', idempotencyKey: KEY },
      { clock: manualClock(0, sequence(0, 0.999)), signal: signal(), sleep },
    )
    expect(outcome.result.output).toBe('Hello from the fake')
    expect(outcome.tries).toBe(3)
    expect(server.requests).toHaveLength(3)
    // every retry carries the same key, so a server that honours it never runs the job twice
    expect(server.requests.map((r) => r.headers['idempotency-key'])).toEqual([KEY, KEY, KEY])
    // full jitter: random·min(2000, 100·2^n); random 0 gives 0, which equal jitter never would
    expect(delays).toEqual([0, 0.999 * 200])
    delays.forEach((d, n) => {
      expect(d).toBeGreaterThanOrEqual(0)
      expect(d).toBeLessThan(Math.min(2000, 100 * 2 ** n))
    })
    expect(breaker.state).toBe('closed')
    expect(breaker.consecutiveFailures).toBe(0)
  })

  it.each([
    ['Retry-After seconds', { 'retry-after': '2' }, 2000],
    ['retry-after-ms', { 'retry-after-ms': '1500', 'retry-after': '9' }, 1500],
    ['Retry-After HTTP-date', { 'retry-after': new Date(Date.UTC(2025, 0, 1, 0, 0, 3)).toUTCString() }, 3000],
  ])('honours %s', async (_name, headers, expected) => {
    const body = { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } }
    const clock = manualClock(Date.UTC(2025, 0, 1, 0, 0, 0), () => 0.5)
    const { provider } = await setup(failThenSucceed({ status: 429, body, headers }), { now: () => clock.now() })
    const { sleep, delays } = recordingSleep()
    const outcome = await callProvider(
      { provider, breaker: new CircuitBreaker('k') },
      { model: 'm', input: 'x', idempotencyKey: KEY },
      { clock, signal: signal(), sleep },
    )
    expect(outcome.tries).toBe(2)
    expect(delays).toEqual([expected])
  })

  it('a Retry-After beyond the in-attempt ceiling ends the attempt, carrying retryAfterMs', async () => {
    const { server, provider } = await setup(failThenSucceed({ status: 429, headers: { 'retry-after': '30' } }))
    const { sleep, delays } = recordingSleep()
    const run = callProvider({ provider, breaker: new CircuitBreaker('k') }, { model: 'm', input: 'x', idempotencyKey: KEY }, { clock: manualClock(0), signal: signal(), sleep })
    await expect(run).rejects.toSatisfy((e) => e instanceof ProviderRateLimited && e.retryAfterMs === 30_000)
    expect(server.requests).toHaveLength(1)
    expect(delays).toEqual([])
  })

  it.each([
    ['401 invalid_api_key', 401, { error: { message: 'Incorrect API key provided', type: 'invalid_request_error', code: 'invalid_api_key' } }, 'invalid_api_key'],
    ['429 insufficient_quota', 429, { error: { message: 'You exceeded your current quota', type: 'insufficient_quota', code: 'insufficient_quota' } }, 'insufficient_quota'],
  ])('%s is terminal at once', async (_name, status, body, code) => {
    const { server, provider } = await setup(failThenSucceed({ status, body }))
    const { sleep, delays } = recordingSleep()
    const breaker = new CircuitBreaker('k', { failureThreshold: 1 })
    const run = callProvider({ provider, breaker }, { model: 'm', input: 'x', idempotencyKey: KEY }, { clock: manualClock(0), signal: signal(), sleep })
    await expect(run).rejects.toSatisfy((e) => e instanceof ProviderRejected && e.status === status && e.providerCode === code && !e.retryable)
    expect(server.requests).toHaveLength(1)
    expect(delays).toEqual([])
    expect(breaker.state).toBe('closed') // a terminal 4xx is not a breaker failure
  })

  it('a request hanging past the headers timeout is a ProviderTimeout', async () => {
    const { server, provider } = await setup(() => {
      // never answer
    }, { timeouts: { headersMs: 200 } })
    const run = provider.complete({ model: 'm', input: 'x', idempotencyKey: KEY, signal: signal() })
    await expect(run).rejects.toSatisfy((e) => e instanceof ProviderTimeout && e.retryable)
    expect(server.requests).toHaveLength(1)
  })

  it('abort mid-request closes the connection and rejects with ProviderAborted', async () => {
    let arrived!: () => void
    const requestArrived = new Promise<void>((resolve) => (arrived = resolve))
    let closed!: () => void
    const connectionClosed = new Promise<void>((resolve) => (closed = resolve))
    const { provider } = await setup((_seen, _res, req) => {
      req.socket.on('close', () => closed())
      arrived()
    })
    const controller = new AbortController()
    const run = provider.complete({ model: 'm', input: 'x', idempotencyKey: KEY, signal: controller.signal })
    const settled = run.then(
      () => 'resolved',
      (e: unknown) => e,
    )
    await requestArrived
    controller.abort()
    await connectionClosed // the test times out here if the abort left the socket open
    const outcome = await settled
    expect(outcome).toBeInstanceOf(ProviderAborted)
    expect((outcome as ProviderAborted).retryable).toBe(false)
  })

  it('a refused connection is ProviderUnavailable', async () => {
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const { port } = probe.address() as AddressInfo
    await new Promise<void>((resolve) => probe.close(() => resolve()))
    const provider = new OpenAIProvider({ baseUrl: `http://127.0.0.1:${port}/v1` })
    providers.push(provider)
    await expect(provider.complete({ model: 'm', input: 'x', idempotencyKey: KEY, signal: signal() })).rejects.toSatisfy(
      (e) => e instanceof ProviderUnavailable && e.retryable && e.status === undefined,
    )
  })

  it('a 200 that is not a completion is ProviderUnavailable', async () => {
    const { provider } = await setup((_seen, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end('<html>maintenance</html>')
    })
    await expect(provider.complete({ model: 'm', input: 'x', idempotencyKey: KEY, signal: signal() })).rejects.toBeInstanceOf(ProviderUnavailable)
  })
})
