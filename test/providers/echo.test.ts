import { describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { echoWords, EchoProvider } from '../../src/providers/echo.js'
import { ProviderAborted, ProviderRateLimited, ProviderUnavailable } from '../../src/providers/errors.js'
import { DeltaStream } from '../../src/providers/delta-stream.js'
import { KEY, recordingSleep } from './fake-server.js'

const signal = () => new AbortController().signal

describe('echo provider', () => {
  it('answers with the input, deterministically', async () => {
    const echo = new EchoProvider()
    const a = await echo.complete({ model: 'echo', input: 'héllo wörld', idempotencyKey: KEY, signal: signal() })
    const b = await echo.complete({ model: 'echo', input: 'héllo wörld', idempotencyKey: 'b'.repeat(64), signal: signal() })
    // 'héllo wörld' is 13 UTF-8 bytes → ceil(13 / 4) = 4 tokens
    expect(a).toEqual({ output: 'héllo wörld', finish_reason: 'stop', usage: { input_tokens: 4, output_tokens: 4 }, usageReported: true })
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

  it('splits its output into words that keep their whitespace, so they join to the output exactly', () => {
    expect(echoWords('  two  words\n and\ta tab ')).toEqual(['  two  ', 'words\n ', 'and\t', 'a ', 'tab '])
    expect(echoWords('')).toEqual([])
    expect(echoWords(' ')).toEqual([' '])
    for (const text of ['héllo wörld 👋🏽', ' lead', 'trail ', 'a\r\nb', 'one']) expect(echoWords(text).join('')).toBe(text)
  })

  it('streams word by word when given a delta sink', async () => {
    const deltas: string[] = []
    const result = await new EchoProvider({ delta_ms: 1 }).complete({ model: 'echo', input: 'stream these four words', idempotencyKey: KEY, signal: signal(), onDelta: (t) => deltas.push(t) })
    expect(deltas).toEqual(['stream ', 'these ', 'four ', 'words'])
    expect(result).toEqual({ output: 'stream these four words', finish_reason: 'stop', usage: { input_tokens: 6, output_tokens: 6 }, usageReported: true })
  })

  it('break_after breaks the stream after that many words, retryably, and fail_times limits it to the first calls', async () => {
    const echo = new EchoProvider({ break_after: 2, fail_times: 1 })
    const deltas: string[] = []
    const call = () => echo.complete({ model: 'echo', input: 'one two three', idempotencyKey: KEY, signal: signal(), onDelta: (t) => deltas.push(t) })
    const error = await call().then(() => undefined, (e: unknown) => e)
    expect(error).toSatisfy((e) => e instanceof ProviderUnavailable && e.retryable)
    // it ran: the prompt and the words sent are known, but no final usage was reported
    expect((error as ProviderUnavailable).spent).toEqual({ usage: { input_tokens: 4, output_tokens: 2 }, reported: false })
    expect(deltas).toEqual(['one ', 'two '])
    await expect(call()).resolves.toMatchObject({ output: 'one two three', usageReported: true })
    // a break after more words than there are still ends without the terminal event
    await expect(new EchoProvider({ break_after: 99 }).complete({ model: 'echo', input: 'short', idempotencyKey: KEY, signal: signal(), onDelta: () => {} })).rejects.toBeInstanceOf(ProviderUnavailable)
    // and a call without a sink fails the same way
    await expect(new EchoProvider({ break_after: 1 }).complete({ model: 'echo', input: 'a b', idempotencyKey: KEY, signal: signal() })).rejects.toBeInstanceOf(ProviderUnavailable)
  })

  it('a broken stream retried within one attempt resets first; the deltas after the reset are the output', async () => {
    const seen: string[] = []
    const deltas = new DeltaStream({ onDelta: (i, t) => seen.push(`${i}:${t}`), onReset: () => seen.push('reset') })
    const { sleep } = recordingSleep()
    const outcome = await callProvider(
      { provider: new EchoProvider({ break_after: 1, fail_times: 2 }), breaker: new CircuitBreaker('echo') },
      { model: 'echo', input: 'a b c', idempotencyKey: KEY },
      { clock: manualClock(0), signal: signal(), sleep, deltas },
    )
    expect(outcome.tries).toBe(3)
    expect(seen).toEqual(['0:a ', 'reset', '0:a ', 'reset', '0:a ', '1:b ', '2:c'])
  })

  it('an abort between two words stops the stream', async () => {
    const controller = new AbortController()
    const deltas: string[] = []
    const run = new EchoProvider({ delta_ms: 600_000 }).complete({ model: 'echo', input: 'first second', idempotencyKey: KEY, signal: controller.signal, onDelta: (t) => {
      deltas.push(t)
      setImmediate(() => controller.abort())
    } })
    const error = await run.then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(ProviderAborted)
    expect((error as ProviderAborted).spent).toMatchObject({ reported: false })
    expect(deltas).toEqual(['first '])
  })
})
