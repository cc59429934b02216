import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { BreakerOpen, callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { ProviderAborted, ProviderUnavailable } from '../../src/providers/errors.js'
import { OpenAIProvider } from '../../src/providers/openai.js'
import { KEY, recordingSleep, sendJson, startFakeServer, type FakeServer } from './fake-server.js'

const completion = { choices: [{ message: { role: 'assistant', content: 'up again' }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 2 } }

let server: FakeServer | undefined
let provider: OpenAIProvider | undefined

afterEach(async () => {
  await provider?.close()
  await server?.close()
  provider = undefined
  server = undefined
})

describe('callProvider with the circuit breaker', () => {
  it('opens after repeated failures, refuses while open, half-opens after the cooldown and closes on success', async () => {
    let healthy = false
    server = await startFakeServer((_seen, res) => (healthy ? sendJson(res, 200, completion) : sendJson(res, 503, { error: { message: 'down' } })))
    provider = new OpenAIProvider({ baseUrl: server.url })
    const clock = manualClock(1_000_000)
    const breaker = new CircuitBreaker('openai test', { failureThreshold: 5, cooldownMs: 30_000 })
    const { sleep } = recordingSleep()
    const call = () => callProvider({ provider: provider!, breaker }, { model: 'm', input: 'x', idempotencyKey: KEY }, { clock, signal: new AbortController().signal, sleep })

    // 3 tries fail; then 2 more tries, and the 5th failure opens the breaker, which ends the retries
    await expect(call()).rejects.toBeInstanceOf(ProviderUnavailable)
    expect(breaker.state).toBe('closed')
    const second = await call().then(() => undefined, (e: unknown) => e)
    expect(second).toBeInstanceOf(ProviderUnavailable)
    expect(server.requests).toHaveLength(5)
    expect(breaker.state).toBe('open')
    expect(breaker.openUntil).toBe(1_030_000)

    // while open nothing is sent, and the pool learns when to come back
    const refused = await call().then(() => undefined, (e: unknown) => e)
    expect(refused).toBeInstanceOf(BreakerOpen)
    expect((refused as BreakerOpen).retryAt).toBe(1_030_000)
    expect((refused as BreakerOpen).retryAfterMs).toBe(30_000)
    expect(server.requests).toHaveLength(5)

    // after the cooldown one probe goes; it fails once and re-opens, without retrying
    clock.advance(30_000)
    await expect(call()).rejects.toBeInstanceOf(ProviderUnavailable)
    expect(server.requests).toHaveLength(6)
    expect(breaker.state).toBe('open')
    await expect(call()).rejects.toBeInstanceOf(BreakerOpen)

    // the next probe succeeds and closes it
    clock.advance(30_000)
    healthy = true
    const outcome = await call()
    expect(outcome.result.output).toBe('up again')
    expect(outcome.tries).toBe(1)
    expect(breaker.state).toBe('closed')
    expect(server.requests).toHaveLength(7)
  })

  it('an abort is not a breaker failure and frees the half-open probe', async () => {
    server = await startFakeServer(() => {
      // never answer
    })
    provider = new OpenAIProvider({ baseUrl: server.url })
    const breaker = new CircuitBreaker('k', { failureThreshold: 1, cooldownMs: 10 })
    breaker.onFailure(0)
    const clock = manualClock(100)
    const controller = new AbortController()
    const run = callProvider({ provider, breaker }, { model: 'm', input: 'x', idempotencyKey: KEY }, { clock, signal: controller.signal })
    const settled = run.then(() => undefined, (e: unknown) => e)
    while (server.requests.length === 0) await new Promise((r) => setImmediate(r))
    expect(breaker.state).toBe('half-open')
    expect(breaker.canRun(clock.now())).toBe(false)
    controller.abort()
    expect(await settled).toBeInstanceOf(ProviderAborted)
    expect(breaker.state).toBe('half-open')
    expect(breaker.canRun(clock.now())).toBe(true)
  })

  it('an already aborted signal sends nothing', async () => {
    server = await startFakeServer((_seen, res) => sendJson(res, 200, completion))
    provider = new OpenAIProvider({ baseUrl: server.url })
    const controller = new AbortController()
    controller.abort()
    const run = callProvider({ provider, breaker: new CircuitBreaker('k') }, { model: 'm', input: 'x', idempotencyKey: KEY }, { clock: manualClock(0), signal: controller.signal })
    await expect(run).rejects.toBeInstanceOf(ProviderAborted)
    expect(server.requests).toHaveLength(0)
  })
})
