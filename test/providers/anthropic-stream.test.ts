import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { attemptUsage, callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { DeltaStream } from '../../src/providers/delta-stream.js'
import { ProviderAborted, ProviderUnavailable } from '../../src/providers/errors.js'
import { AnthropicProvider } from '../../src/providers/anthropic.js'
import type { CallUsage } from '../../src/providers/types.js'
import { KEY, recordingSleep, sendJson, startFakeServer, type FakeHandler, type FakeServer } from './fake-server.js'
import { anthropicStream, closedBy, cutAt, randomCuts, seeded, throughEventWith, writeInPieces } from './streams.js'

const servers: FakeServer[] = []
const providers: AnthropicProvider[] = []

async function setup(handler: FakeHandler) {
  const server = await startFakeServer(handler)
  servers.push(server)
  const provider = new AnthropicProvider({ baseUrl: server.url, apiKey: 'sk-ant-test' })
  providers.push(provider)
  return { server, provider }
}

afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()))
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

async function streamed(provider: AnthropicProvider, controller = new AbortController()) {
  const deltas: string[] = []
  const outcome = await provider.complete({ model: 'claude-test', input: 'Bonjour', idempotencyKey: KEY, signal: controller.signal, onDelta: (t) => deltas.push(t) })
    .then((result) => ({ result, error: undefined }), (error: unknown) => ({ result: undefined, error: error as Error }))
  return { ...outcome, deltas }
}

const WORDS = ['Ça', ' va', ' très', ' bien', ' 🙂']

describe('anthropic provider, streaming', () => {
  it('asks for a stream and reads text deltas, the stop reason and the usage of message_start and message_delta', async () => {
    const { server, provider } = await setup((_seen, res) => void writeInPieces(res, [anthropicStream(WORDS, { stopReason: 'max_tokens', inputTokens: 31, outputTokens: 6 })]))
    const { result, deltas } = await streamed(provider)
    expect(deltas).toEqual(WORDS)
    // the tool call's input_json_delta is not output text
    expect(result).toEqual({ output: WORDS.join(''), finish_reason: 'length', usage: { input_tokens: 31, output_tokens: 6 }, usageReported: true })
    expect(server.requests[0]!.body).toMatchObject({ model: 'claude-test', stream: true, messages: [{ role: 'user', content: 'Bonjour' }] })
    expect(server.requests[0]!.headers.accept).toBe('text/event-stream')
  })

  it('reads the same answer in random pieces (seeded), CRLF line ends included', async () => {
    const texts = [anthropicStream(WORDS), anthropicStream(WORDS, { eol: '\r\n' })]
    let next: () => (string | Buffer)[] = () => [texts[0]!]
    const { provider } = await setup((_seen, res) => void writeInPieces(res, next()))
    for (let seed = 1; seed <= 40; seed++) {
      const text = texts[seed % 2]!
      const random = seeded(seed)
      next = () => cutAt(text, randomCuts(text, random))
      const { result, deltas } = await streamed(provider)
      expect(deltas, `seed ${seed}`).toEqual(WORDS)
      expect(result).toEqual({ output: WORDS.join(''), finish_reason: 'stop', usage: { input_tokens: 25, output_tokens: 15 }, usageReported: true })
    }
  }, 60_000)

  it('reads the same answer whatever byte the stream is cut at', async () => {
    // Compact events (the real ones carry more fields) keep this to a few hundred requests.
    const text = [
      'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}',
      ': a comment',
      'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Grüß"}}',
      'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":" 👋"}}',
      'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}',
      'event: message_stop\ndata: {"type":"message_stop"}',
      '',
    ].join('\n\n')
    let cut = 0
    const { provider } = await setup((_seen, res) => void writeInPieces(res, cutAt(text, [cut])))
    const length = Buffer.byteLength(text, 'utf8')
    for (cut = 1; cut < length; cut++) {
      const { result } = await streamed(provider)
      expect(result, `cut at byte ${cut}`).toEqual({ output: 'Grüß 👋', finish_reason: 'stop', usage: { input_tokens: 3, output_tokens: 2 }, usageReported: true })
    }
  }, 60_000)

  it('without the final usage (no message_delta usage) it answers with usageReported false', async () => {
    const { provider } = await setup((_seen, res) => void writeInPieces(res, [anthropicStream(['x'], { finalUsage: false })]))
    const { result } = await streamed(provider)
    expect(result).toEqual({ output: 'x', finish_reason: 'stop', usage: { input_tokens: 0, output_tokens: 0 }, usageReported: false })
  })

  it('an overloaded_error event mid-stream is retryable; the retry resets and counts from 0', async () => {
    const full = anthropicStream(WORDS, { inputTokens: 8, outputTokens: 5 })
    const broken = `${throughEventWith(full, '" va"')}event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n`
    let n = 0
    const { server, provider } = await setup((_seen, res) => void writeInPieces(res, [n++ === 0 ? broken : full], n === 1 ? 'hold' : 'end'))
    const first = await streamed(provider)
    expect(first.error).toSatisfy((e) => e instanceof ProviderUnavailable && e.retryable && e.providerCode === 'overloaded_error')
    // the input was reported at message_start, the output never: a lower bound, not a report
    expect((first.error as ProviderUnavailable).spent).toEqual({ usage: { input_tokens: 8, output_tokens: 1 }, reported: false })
    expect(first.deltas).toEqual(['Ça', ' va'])

    n = 0
    const seen: string[] = []
    const usage: CallUsage[] = []
    const deltas = new DeltaStream({ onDelta: (i, t) => seen.push(`${i}:${t}`), onReset: () => seen.push('reset') })
    const { sleep } = recordingSleep()
    const outcome = await callProvider({ provider, breaker: new CircuitBreaker('k') }, { model: 'claude-test', input: 'x', idempotencyKey: KEY }, { clock: manualClock(0), signal: new AbortController().signal, sleep, deltas, usage })
    expect(server.requests).toHaveLength(3)
    expect(seen).toEqual(['0:Ça', '1: va', 'reset', ...WORDS.map((w, i) => `${i}:${w}`)])
    expect(outcome.result.output).toBe(WORDS.join(''))
    expect(attemptUsage(usage)).toEqual({
      calls: [
        { model: 'claude-test', input_tokens: 8, output_tokens: 1, reported: false },
        { model: 'claude-test', input_tokens: 8, output_tokens: 5, reported: true },
      ],
      unmetered: 1,
    })
  })

  it.each([
    ['ends without message_stop', (res: Parameters<FakeHandler>[1]) => void writeInPieces(res, [anthropicStream(['a', 'b'], { stop: false })])],
    ['breaks off after a delta', (res: Parameters<FakeHandler>[1]) => void writeInPieces(res, [throughEventWith(anthropicStream(['a', 'b']), '"a"')], 'destroy')],
  ])('a stream that %s is a retryable ProviderUnavailable', async (_name, handler) => {
    const { provider } = await setup((_seen, res) => handler(res))
    const { error, deltas } = await streamed(provider)
    expect(error).toSatisfy((e) => e instanceof ProviderUnavailable && e.retryable && e.spent !== undefined)
    expect(deltas[0]).toBe('a')
  })

  it('a 529 before the stream starts is classified as without streaming and costs nothing', async () => {
    const { provider } = await setup((_seen, res) => sendJson(res, 529, { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }))
    const { error, deltas } = await streamed(provider)
    expect(error).toSatisfy((e) => e instanceof ProviderUnavailable && e.status === 529 && e.providerCode === 'overloaded_error' && e.spent === undefined)
    expect(deltas).toEqual([])
  })

  it('a cancel mid-stream closes the socket at once', async () => {
    let serverSawClose: Promise<void> | undefined
    const { provider } = await setup((_seen, res, req) => {
      serverSawClose = closedBy(req)
      void writeInPieces(res, [throughEventWith(anthropicStream(['a', 'b']), '"a"')], 'hold')
    })
    const controller = new AbortController()
    const run = provider.complete({ model: 'c', input: 'x', idempotencyKey: KEY, signal: controller.signal, onDelta: () => controller.abort() })
    await expect(run).rejects.toBeInstanceOf(ProviderAborted)
    await serverSawClose // the test times out here if the abort left the socket open
  })
})
