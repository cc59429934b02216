import { describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { EchoProvider } from '../../src/providers/echo.js'
import { ProviderAborted, ProviderRateLimited, ProviderUnavailable } from '../../src/providers/errors.js'
import { KEY, recordingSleep } from './fake-server.js'

const signal = () => new AbortController().signal

describe('echo provider', () => {
  it('answers with the input, deterministically', async () => {
    const echo = new EchoProvider()
    const a = await echo.complete({ model: 'echo', input: 'héllo wörld', idempotencyKey: KEY, signal: signal() })
    const b = await echo.complete({ model: 'echo', input: 'héllo wörld', idempotencyKey: 'b'.repeat(64), signal: signal() })
    // 'héllo wörld' is 13 UTF-8 bytes → ceil(13 / 4) = 4 tokens
    expect(a).toEqual({ output: 'héllo wörld', finish_reason: 'stop', usage: { input_tokens: 4, output_tokens: 4 } })
    expect(b).toEqual(a)
  })

  it('answers messages with the last user message', async () => {
    const result = await new EchoProvider().complete({
      model: 'echo',
      messages: [
        { role: 'system', content: 'be brief' },
        { role: 'user', content: 'first' },
        { role: 'assistant', content: 'ok' },
        { role: 'user', content: 'second question' },
      ],
      idempotencyKey: KEY,
      signal: signal(),
    })
    expect(result.output).toBe('second question')
    // prompt "be brief\nfirst\nok\nsecond question" is 33 bytes → 9; output 15 bytes → 4
    expect(result.usage).toEqual({ input_tokens: 9, output_tokens: 4 })
  })

  it('a delay is cut short by the abort signal', async () => {
    const echo = new EchoProvider({ delay_ms: 600_000 })
    const controller = new AbortController()
    const run = echo.complete({ model: 'echo', input: 'x', idempotencyKey: KEY, signal: controller.signal })
    setImmediate(() => controller.abort())
    await expect(run).rejects.toBeInstanceOf(ProviderAborted)
  })

  it('fail_times fails the first N calls per idempotency key with fail_status', async () => {
    const echo = new EchoProvider({ fail_status: 503, fail_times: 2 })
    const call = (key: string) => echo.complete({ model: 'echo', input: 'x', idempotencyKey: key, signal: signal() })
    await expect(call(KEY)).rejects.toMatchObject({ name: 'ProviderUnavailable', status: 503 })
    await expect(call(KEY)).rejects.toBeInstanceOf(ProviderUnavailable)
    await expect(call(KEY)).resolves.toMatchObject({ output: 'x' })
    await expect(call(KEY)).resolves.toMatchObject({ output: 'x' })
    await expect(call('c'.repeat(64))).rejects.toBeInstanceOf(ProviderUnavailable) // another key counts afresh
  })

  it('fail_status without fail_times always fails, classified like a real answer', async () => {
    const echo = new EchoProvider({ fail_status: 429 })
    for (let i = 0; i < 3; i++) {
      await expect(echo.complete({ model: 'echo', input: 'x', idempotencyKey: KEY, signal: signal() })).rejects.toBeInstanceOf(ProviderRateLimited)
    }
  })

  it('"503 twice, then 200" succeeds within one callProvider attempt', async () => {
    const { sleep, delays } = recordingSleep()
    const breaker = new CircuitBreaker('echo')
    const outcome = await callProvider(
      { provider: new EchoProvider({ fail_status: 503, fail_times: 2 }), breaker },
      { model: 'echo', input: 'again', idempotencyKey: KEY },
      { clock: manualClock(0), signal: signal(), sleep },
    )
    expect(outcome.result.output).toBe('again')
    expect(outcome.tries).toBe(3)
    expect(delays).toHaveLength(2)
    expect(breaker.consecutiveFailures).toBe(0)
  })
})
