import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { attemptUsage } from '../../src/providers/call-provider.js'
import { callWithFallbacks } from '../../src/providers/call-with-fallbacks.js'
import { DeltaStream } from '../../src/providers/delta-stream.js'
import { BreakerOpen, ProviderRejected, ProviderUnavailable } from '../../src/providers/errors.js'
import { createProviderRegistry, type ProviderRegistry } from '../../src/providers/registry.js'
import type { CallUsage, ModelConfig } from '../../src/providers/types.js'
import { KEY, recordingSleep, sendJson, startFakeServer, type FakeServer } from './fake-server.js'
import { openAiStream, throughEventWith, writeInPieces } from './streams.js'

/**
 * Fallbacks (SPEC §9) against real loopback providers: each endpoint is a path prefix of one fake
 * server, answering the way its name says.
 */
let server: FakeServer
let registry: ProviderRegistry | undefined
const clock = manualClock(1_000_000)

beforeEach(async () => {
  server = await startFakeServer((seen, res) => {
    const endpoint = seen.path.split('/')[1]
    const stream = (seen.body as { stream?: boolean }).stream === true
    switch (endpoint) {
      case 'down':
        return sendJson(res, 503, { error: { message: 'overloaded', type: 'server_error' } })
      case 'rejects':
        return sendJson(res, 401, { error: { message: 'bad key', type: 'invalid_request_error', code: 'invalid_api_key' } })
      case 'breaks': {
        // every try streams one delta, then the connection drops
        return void writeInPieces(res, [throughEventWith(openAiStream(['half', ' way']), '"half"')], 'destroy')
      }
      case 'breaks-early':
        // the connection drops before the first delta
        return void writeInPieces(res, [': opening comment\n\n'], 'destroy')
      case 'claude':
        if (stream) return void writeInPieces(res, ['event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":11,"output_tokens":1}}}\n\n', 'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"from claude"}}\n\n', 'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}\n\n', 'event: message_stop\ndata: {"type":"message_stop"}\n\n'])
        return sendJson(res, 200, { content: [{ type: 'text', text: 'from claude' }], stop_reason: 'end_turn', usage: { input_tokens: 11, output_tokens: 5 } })
      default:
        return sendJson(res, 200, { choices: [{ message: { content: `from ${endpoint}` }, finish_reason: 'stop' }], usage: { prompt_tokens: 2, completion_tokens: 3 } })
    }
  })
})

afterEach(async () => {
  await registry?.close()
  registry = undefined
  await server.close()
})

function build(models: Record<string, ModelConfig>): ProviderRegistry {
  registry = createProviderRegistry({ defaultProvider: 'echo', defaultModel: 'echo', models, clock, breaker: { failureThreshold: 5, cooldownMs: 30_000 } })
  return registry
}

const openai = (endpoint: string, fallback?: string[]): ModelConfig => ({ provider: 'openai', url: `URL/${endpoint}/v1`, ...(fallback ? { fallback } : {}) })
const withUrls = (models: Record<string, ModelConfig>) =>
  Object.fromEntries(Object.entries(models).map(([name, m]) => [name, m.url ? { ...m, url: m.url.replace('URL', server.url) } : m]))

const callsTo = (endpoint: string) => server.requests.filter((r) => r.path.startsWith(`/${endpoint}/`)).length

async function run(chainOf: string, options: { stream?: boolean } = {}) {
  const usage: CallUsage[] = []
  const fallbacks: string[] = []
  const seen: string[] = []
  const deltas = options.stream ? new DeltaStream({ onDelta: (i, t) => seen.push(`${i}:${t}`), onReset: () => seen.push('reset') }) : undefined
  const outcome = await callWithFallbacks(registry!.chain(chainOf), { input: 'hi', idempotencyKey: KEY }, {
    clock, signal: new AbortController().signal, sleep: recordingSleep().sleep, usage, ...(deltas ? { deltas } : {}),
    onFallback: (from, to) => fallbacks.push(`${from.model}→${to.model}`),
  })
  return { outcome, usage: attemptUsage(usage), fallbacks, seen }
}

describe('fallbacks', () => {
  it('a model whose provider answers 503 after its retries runs on its fallback, which answers with its own usage', async () => {
    build(withUrls({ primary: openai('down', ['backup']), backup: { provider: 'anthropic', url: `${server.url}/claude` } }))
    const { outcome, usage, fallbacks } = await run('primary')
    expect(callsTo('down')).toBe(3) // the whole in-attempt retry budget first
    expect(callsTo('claude')).toBe(1)
    expect(outcome.ok).toBe(true)
    if (!outcome.ok) return
    expect(outcome.resolved.model).toBe('backup')
    expect(outcome.resolved.provider.name).toBe('anthropic')
    expect(outcome.call.result).toMatchObject({ output: 'from claude', usage: { input_tokens: 11, output_tokens: 5 }, usageReported: true })
    expect(server.requests.find((r) => r.path.startsWith('/claude/'))!.body).toMatchObject({ model: 'backup' })
    // the 503s cost nothing: only the call that answered is billed, at its model
    expect(usage).toEqual({ calls: [{ model: 'backup', input_tokens: 11, output_tokens: 5, reported: true }], unmetered: 0 })
    expect(fallbacks).toEqual(['primary→backup'])
  })

  it('an open breaker falls back without calling the first provider', async () => {
    build(withUrls({ primary: openai('down', ['backup']), backup: openai('up') }))
    const breaker = registry!.resolve('primary').breaker
    for (let i = 0; i < breaker.failureThreshold; i++) breaker.onFailure(clock.now())
    expect(breaker.state).toBe('open')
    const { outcome, usage } = await run('primary')
    expect(callsTo('down')).toBe(0)
    expect(outcome).toMatchObject({ ok: true, resolved: { model: 'backup' } })
    expect(usage.calls.map((c) => c.model)).toEqual(['backup'])
  })

  it('when every breaker of the chain is open the attempt waits for the first to reopen, sending nothing', async () => {
    build(withUrls({ primary: openai('down', ['backup']), backup: openai('up') }))
    registry!.resolve('primary').breaker.onFailure(clock.now())
    const first = registry!.resolve('primary').breaker
    const second = registry!.resolve('backup').breaker
    for (let i = 0; i < 5; i++) second.onFailure(clock.now())
    clock.advance(10_000)
    for (let i = 0; i < 4; i++) first.onFailure(clock.now())
    expect([first.state, second.state]).toEqual(['open', 'open'])
    const { outcome, usage } = await run('primary')
    expect(outcome.ok).toBe(false)
    if (outcome.ok) return
    expect(outcome.error).toBeInstanceOf(BreakerOpen)
    expect((outcome.error as BreakerOpen).retryAt).toBe(second.openUntil) // the earlier of the two
    expect(server.requests).toHaveLength(0)
    expect(usage).toEqual({ calls: [], unmetered: 0 })
  })

  it('never falls back once a delta went out: the failure is the attempt\'s', async () => {
    build(withUrls({ primary: openai('breaks', ['backup']), backup: openai('up') }))
    const { outcome, usage, seen, fallbacks } = await run('primary', { stream: true })
    expect(outcome.ok).toBe(false)
    if (outcome.ok) return
    expect(outcome.error).toSatisfy((e) => e instanceof ProviderUnavailable && e.retryable)
    expect(outcome.resolved.model).toBe('primary')
    expect(callsTo('breaks')).toBe(3)
    expect(callsTo('up')).toBe(0)
    expect(fallbacks).toEqual([])
    expect(seen).toEqual(['0:half', 'reset', '0:half', 'reset', '0:half'])
    // each broken stream ran and reported nothing: three calls charged at their reservation
    expect(usage).toEqual({ calls: Array.from({ length: 3 }, () => ({ model: 'primary', input_tokens: 0, output_tokens: 0, reported: false })), unmetered: 3 })
  })

  it('a stream that broke before its first delta still falls back, and the unmetered calls stay on the bill', async () => {
    build(withUrls({ primary: openai('breaks-early', ['backup']), backup: { provider: 'anthropic', url: `${server.url}/claude` } }))
    const { outcome, usage, seen } = await run('primary', { stream: true })
    expect(outcome).toMatchObject({ ok: true, resolved: { model: 'backup' } })
    expect(seen).toEqual(['0:from claude'])
    expect(usage).toEqual({
      calls: [
        ...Array.from({ length: 3 }, () => ({ model: 'primary', input_tokens: 0, output_tokens: 0, reported: false })),
        { model: 'backup', input_tokens: 11, output_tokens: 5, reported: true },
      ],
      unmetered: 3,
    })
  })

  it('a terminal 4xx does not fall back', async () => {
    build(withUrls({ primary: openai('rejects', ['backup']), backup: openai('up') }))
    const { outcome } = await run('primary')
    expect(outcome.ok).toBe(false)
    if (outcome.ok) return
    expect(outcome.error).toSatisfy((e) => e instanceof ProviderRejected && e.providerCode === 'invalid_api_key')
    expect(callsTo('rejects')).toBe(1)
    expect(callsTo('up')).toBe(0)
  })

  it('a chain runs each model once, each followed by its own fallbacks, and ends with the last failure', async () => {
    build(withUrls({
      a: openai('down', ['b', 'c']),
      b: openai('down', ['d', 'a']),
      c: openai('up'),
      d: openai('down', ['c']),
    }))
    expect(registry!.chain('a').map((m) => m.model)).toEqual(['a', 'b', 'd', 'c'])
    expect(registry!.chain('echo').map((m) => m.model)).toEqual(['echo'])
    const { outcome, fallbacks } = await run('a')
    expect(outcome).toMatchObject({ ok: true, resolved: { model: 'c' } })
    expect(fallbacks).toEqual(['a→b', 'b→d', 'd→c'])
    // a, b and d share one endpoint and so one breaker: after five 503s it opened, and d was
    // refused without a call
    expect(callsTo('down')).toBe(5)
  })
})
