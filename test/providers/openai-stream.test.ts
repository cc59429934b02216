import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { attemptUsage, callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { DeltaStream } from '../../src/providers/delta-stream.js'
import { ProviderAborted, ProviderError, ProviderRateLimited, ProviderRejected, ProviderUnavailable } from '../../src/providers/errors.js'
import { OpenAIProvider } from '../../src/providers/openai.js'
import type { CallUsage } from '../../src/providers/types.js'
import { KEY, recordingSleep, sendJson, startFakeServer, type FakeHandler, type FakeServer } from './fake-server.js'
import { closedBy, cutAt, openAiStream, randomCuts, seeded, throughEventWith, writeInPieces } from './streams.js'

const servers: FakeServer[] = []
const providers: OpenAIProvider[] = []

async function setup(handler: FakeHandler) {
  const server = await startFakeServer(handler)
  servers.push(server)
  const provider = new OpenAIProvider({ baseUrl: `${server.url}/v1`, apiKey: 'sk-test' })
  providers.push(provider)
  return { server, provider }
}

afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()))
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

const signal = () => new AbortController().signal

/** A provider call with a delta sink; returns the result (or the error) and the deltas seen. */
async function streamed(provider: OpenAIProvider, controller = new AbortController()) {
  const deltas: string[] = []
  const outcome = await provider.complete({ model: 'gpt-test', input: 'Say hello', idempotencyKey: KEY, signal: controller.signal, onDelta: (t) => deltas.push(t) })
    .then((result) => ({ result, error: undefined }), (error: unknown) => ({ result: undefined, error: error as Error }))
  return { ...outcome, deltas }
}

const WORDS = ['Hél', 'lo', ', wör', 'ld', ' 👋🏽', ' 日本', '語']

describe('openai provider, streaming', () => {
  it('asks for a stream with usage, hands over each delta in order, and reads finish reason and usage from the stream', async () => {
    const { server, provider } = await setup((_seen, res) => void writeInPieces(res, [openAiStream(WORDS, { finishReason: 'length', usage: { prompt_tokens: 21, completion_tokens: 7 } })]))
    const { result, deltas } = await streamed(provider)
    expect(deltas).toEqual(WORDS)
    expect(result).toEqual({ output: WORDS.join(''), finish_reason: 'length', usage: { input_tokens: 21, output_tokens: 7 }, usageReported: true })
    const seen = server.requests[0]!
    expect(seen.body).toMatchObject({ model: 'gpt-test', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'Say hello' }] })
    expect(seen.headers.accept).toBe('text/event-stream')
    expect(seen.headers['idempotency-key']).toBe(KEY)
  })

  it('without a delta sink it does not stream', async () => {
    const { server, provider } = await setup((_seen, res) => sendJson(res, 200, { choices: [{ message: { content: 'whole' }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1 } }))
    const result = await provider.complete({ model: 'm', input: 'x', idempotencyKey: KEY, signal: signal() })
    expect(result.output).toBe('whole')
    expect(server.requests[0]!.body).not.toHaveProperty('stream')
  })

  it('reads the same answer whatever byte the stream is cut at, CRLF and comments included', async () => {
    // Compact chunks (real ones also carry id, object, created and model) keep this to a few hundred requests.
    const text = [
      ': keep-alive',
      'data: {"choices":[{"delta":{"content":"Ça"}}]}',
      'data: {"choices":[{"delta":{"content":" 🙂"}}]}',
      'data: {"choices":[{"delta":{"content":" va"},"finish_reason":"stop"}]}',
      'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3}}',
      'data: [DONE]',
      '',
    ].join('\r\n\r\n')
    let cut = 0
    const { provider } = await setup((_seen, res) => void writeInPieces(res, cutAt(text, [cut])))
    const length = Buffer.byteLength(text, 'utf8')
    for (cut = 1; cut < length; cut++) {
      const { result, deltas } = await streamed(provider)
      expect(result, `cut at byte ${cut}`).toEqual({ output: 'Ça 🙂 va', finish_reason: 'stop', usage: { input_tokens: 4, output_tokens: 3 }, usageReported: true })
      expect(deltas.join('')).toBe('Ça 🙂 va')
    }
  }, 60_000)

  it('reads the same answer in random pieces (seeded)', async () => {
    // data split over two data: lines is one event; its JSON spans the line break
    const text = openAiStream(WORDS).replace('data: {"id":"chatcmpl-s","object":"chat.completion.chunk","created":1,"model":"gpt-test","choices":[{"index":0,"delta":{"content":"lo"}', 'data: {"id":"chatcmpl-s","object":"chat.completion.chunk",\ndata: "created":1,"model":"gpt-test","choices":[{"index":0,"delta":{"content":"lo"}')
    expect(text).toContain('\ndata: "created"')
    let random = seeded(1)
    const { provider } = await setup((_seen, res) => void writeInPieces(res, cutAt(text, randomCuts(text, random))))
    for (let seed = 1; seed <= 40; seed++) {
      random = seeded(seed)
      const { result, deltas } = await streamed(provider)
      expect(deltas, `seed ${seed}`).toEqual(WORDS)
      expect(result).toMatchObject({ output: WORDS.join(''), usageReported: true })
    }
  }, 60_000)

  it('a stream without a usage event answers with usageReported false and no invented numbers', async () => {
    const { provider } = await setup((_seen, res) => void writeInPieces(res, [openAiStream(['a', 'b'], { usage: null })]))
    const { result } = await streamed(provider)
    expect(result).toEqual({ output: 'ab', finish_reason: 'stop', usage: { input_tokens: 0, output_tokens: 0 }, usageReported: false })
  })

  it('a server that ignores stream and answers JSON gives the whole output as one delta', async () => {
    const { provider } = await setup((_seen, res) => sendJson(res, 200, { choices: [{ message: { content: 'all at once' }, finish_reason: 'stop' }], usage: { prompt_tokens: 2, completion_tokens: 3 } }))
    const { result, deltas } = await streamed(provider)
    expect(deltas).toEqual(['all at once'])
    expect(result).toMatchObject({ output: 'all at once', usage: { input_tokens: 2, output_tokens: 3 }, usageReported: true })
  })

  it('a 200 that is neither JSON nor a stream (a proxy page) is a retryable failure that may have cost tokens', async () => {
    const { provider } = await setup((_seen, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end('<html>maintenance</html>')
    })
    const { error, deltas } = await streamed(provider)
    expect(error).toSatisfy((e) => e instanceof ProviderUnavailable && e.retryable && e.spent?.reported === false)
    expect(deltas).toEqual([])
  })

  describe('a stream that breaks partway is a retryable error that may have cost tokens', () => {
    const events = openAiStream(['one', ' two', ' three'])
    const firstTwo = throughEventWith(events, '" two"')

    it.each([
      ['the connection is reset', (res: Parameters<FakeHandler>[1]) => void writeInPieces(res, [firstTwo], 'destroy')],
      ['it ends without [DONE]', (res: Parameters<FakeHandler>[1]) => void writeInPieces(res, [openAiStream(['one', ' two', ' three'], { done: false })])],
      ['an error event arrives', (res: Parameters<FakeHandler>[1]) => void writeInPieces(res, [firstTwo, 'data: {"error":{"message":"model overloaded","type":"server_error","code":"overloaded"}}\n\n'], 'hold')],
      ['a data line is not JSON', (res: Parameters<FakeHandler>[1]) => void writeInPieces(res, [firstTwo, 'data: {"choices":[{"delta":\n\n'], 'hold')],
    ])('when %s', async (name, handler) => {
      const { provider } = await setup((_seen, res) => handler(res))
      const { error, deltas } = await streamed(provider)
      expect(error).toBeInstanceOf(ProviderUnavailable)
      const e = error as ProviderUnavailable
      expect(e.retryable).toBe(true)
      expect(e.spent).toEqual(name === 'it ends without [DONE]'
        ? { usage: { input_tokens: 9, output_tokens: 3 }, reported: true } // its usage chunk did arrive
        : { usage: { input_tokens: 0, output_tokens: 0 }, reported: false })
      if (name === 'an error event arrives') expect(e.providerCode).toBe('overloaded')
      expect(deltas.slice(0, 2)).toEqual(['one', ' two'])
    })
  })

  it('a broken stream is retried within the attempt: the retry resets first and counts from index 0 again', async () => {
    const events = openAiStream(['one', ' two', ' three'], { usage: { prompt_tokens: 5, completion_tokens: 3 } })
    let n = 0
    const { server, provider } = await setup((_seen, res) => {
      n++
      if (n === 1) void writeInPieces(res, [throughEventWith(events, '" two"')], 'destroy')
      else void writeInPieces(res, [events])
    })
    const seen: string[] = []
    const deltas = new DeltaStream({ onDelta: (i, t) => seen.push(`${i}:${t}`), onReset: () => seen.push('reset') })
    const usage: CallUsage[] = []
    const { sleep } = recordingSleep()
    const outcome = await callProvider({ provider, breaker: new CircuitBreaker('k') }, { model: 'gpt-test', input: 'x', idempotencyKey: KEY }, { clock: manualClock(0), signal: signal(), sleep, deltas, usage })
    expect(outcome.tries).toBe(2)
    expect(server.requests).toHaveLength(2)
    expect(seen).toEqual(['0:one', '1: two', 'reset', '0:one', '1: two', '2: three'])
    const afterReset = seen.slice(seen.lastIndexOf('reset') + 1).map((d) => d.replace(/^\d+:/, ''))
    expect(afterReset.join('')).toBe(outcome.result.output)
    expect(attemptUsage(usage)).toEqual({
      calls: [
        { model: 'gpt-test', input_tokens: 0, output_tokens: 0, reported: false },
        { model: 'gpt-test', input_tokens: 5, output_tokens: 3, reported: true },
      ],
      unmetered: 1,
    })
  })

  it('a non-2xx answer before the stream starts is classified as without streaming, and costs nothing', async () => {
    const answers = [
      { status: 429, body: { error: { message: 'slow down', type: 'requests', code: 'rate_limit_exceeded' } }, headers: { 'retry-after': '7' } },
      { status: 401, body: { error: { message: 'bad key', type: 'invalid_request_error', code: 'invalid_api_key' } } },
    ]
    const { provider } = await setup((_seen, res) => {
      const next = answers.shift()!
      sendJson(res, next.status, next.body, next.headers)
    })
    const limited = await streamed(provider)
    expect(limited.error).toBeInstanceOf(ProviderRateLimited)
    expect((limited.error as ProviderRateLimited).retryAfterMs).toBe(7_000)
    expect((limited.error as ProviderError).spent).toBeUndefined()
    const rejected = await streamed(provider)
    expect(rejected.error).toSatisfy((e) => e instanceof ProviderRejected && e.providerCode === 'invalid_api_key' && e.spent === undefined)
    expect(limited.deltas).toEqual([])
  })

  it('an abort mid-stream closes the socket at once and rejects with ProviderAborted', async () => {
    let serverSawClose: Promise<void> | undefined
    const events = openAiStream(['first', ' second'])
    const { provider } = await setup((_seen, res, req) => {
      serverSawClose = closedBy(req)
      void writeInPieces(res, [throughEventWith(events, '"first"')], 'hold')
    })
    const controller = new AbortController()
    const deltas: string[] = []
    const run = provider.complete({ model: 'm', input: 'x', idempotencyKey: KEY, signal: controller.signal, onDelta: (t) => {
      deltas.push(t)
      controller.abort()
    } }).then(() => undefined, (e: unknown) => e)
    const error = await run
    expect(error).toBeInstanceOf(ProviderAborted)
    expect((error as ProviderAborted).spent).toEqual({ usage: { input_tokens: 0, output_tokens: 0 }, reported: false })
    await serverSawClose // the test times out here if the abort left the socket open
    expect(deltas).toEqual(['first'])
  })
})
