import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { AnthropicProvider } from '../../src/providers/anthropic.js'
import { callProvider } from '../../src/providers/call-provider.js'
import { CircuitBreaker } from '../../src/providers/circuit-breaker.js'
import { ProviderRejected, ProviderUnavailable } from '../../src/providers/errors.js'
import { KEY, recordingSleep, sendJson, sequence, startFakeServer, type FakeHandler, type FakeServer } from './fake-server.js'

const message = {
  id: 'msg_1',
  type: 'message',
  role: 'assistant',
  content: [
    { type: 'text', text: 'Hello, ' },
    { type: 'tool_use', id: 't', name: 'x', input: {} },
    { type: 'text', text: 'world' },
  ],
  stop_reason: 'max_tokens',
  usage: { input_tokens: 20, output_tokens: 7, cache_read_input_tokens: 3 },
}
const overloaded = { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }

const servers: FakeServer[] = []
const providers: AnthropicProvider[] = []

async function setup(handler: FakeHandler, maxTokens?: number) {
  const server = await startFakeServer(handler)
  servers.push(server)
  const provider = new AnthropicProvider({ baseUrl: server.url, apiKey: 'sk-ant-test', ...(maxTokens !== undefined && { maxTokens }) })
  providers.push(provider)
  return { server, provider }
}

const signal = () => new AbortController().signal

afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()))
  await Promise.all(servers.splice(0).map((s) => s.close()))
})

describe('anthropic provider', () => {
  it('posts a Messages request and parses text blocks, stop reason and usage', async () => {
    const { server, provider } = await setup((_seen, res) => sendJson(res, 200, message))
    const result = await provider.complete({
      model: 'claude-test',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'system', content: 'Be kind.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello' },
        { role: 'user', content: 'Again' },
      ],
      params: { temperature: 0.5, top_p: 0.8, stop: 'STOP' },
      idempotencyKey: KEY,
      signal: signal(),
    })
    expect(result).toEqual({ output: 'Hello, world', finish_reason: 'length', usage: { input_tokens: 23, output_tokens: 7 }, usageReported: true })
    const seen = server.requests[0]!
    expect(seen.path).toBe('/v1/messages')
    expect(seen.headers['x-api-key']).toBe('sk-ant-test')
    expect(seen.headers['anthropic-version']).toBe('2023-06-01')
    expect(seen.headers['content-type']).toBe('application/json')
    expect(seen.headers.authorization).toBeUndefined()
    expect(seen.body).toEqual({
      model: 'claude-test',
      max_tokens: 1024,
      system: 'Be brief.\n\nBe kind.',
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello' },
        { role: 'user', content: 'Again' },
      ],
      temperature: 0.5,
      top_p: 0.8,
      stop_sequences: ['STOP'],
    })
  })

  it('max_tokens comes from params, else the model configuration', async () => {
    const { server, provider } = await setup((_seen, res) => sendJson(res, 200, { ...message, stop_reason: 'end_turn' }), 300)
    const first = await provider.complete({ model: 'c', input: 'a', idempotencyKey: KEY, signal: signal() })
    await provider.complete({ model: 'c', input: 'a', params: { max_tokens: 50 }, idempotencyKey: KEY, signal: signal() })
    expect(first.finish_reason).toBe('stop')
    expect(server.requests.map((r) => (r.body as { max_tokens: number }).max_tokens)).toEqual([300, 50])
    expect((server.requests[0]!.body as { messages: unknown }).messages).toEqual([{ role: 'user', content: 'a' }])
  })

  it('529 overloaded is retryable: twice, then success within one call', async () => {
    let n = 0
    const { server, provider } = await setup((_seen, res) => (n++ < 2 ? sendJson(res, 529, overloaded) : sendJson(res, 200, message)))
    const { sleep, delays } = recordingSleep()
    const outcome = await callProvider(
      { provider, breaker: new CircuitBreaker('anthropic test') },
      { model: 'c', input: 'x', idempotencyKey: KEY },
      { clock: manualClock(0, sequence(0.5, 0.5)), signal: signal(), sleep },
    )
    expect(outcome.tries).toBe(3)
    expect(outcome.result.output).toBe('Hello, world')
    expect(server.requests).toHaveLength(3)
    expect(delays).toEqual([50, 100])
  })

  it('529 is classified ProviderUnavailable with the provider code', async () => {
    const { provider } = await setup((_seen, res) => sendJson(res, 529, overloaded))
    await expect(provider.complete({ model: 'c', input: 'x', idempotencyKey: KEY, signal: signal() })).rejects.toSatisfy(
      (e) => e instanceof ProviderUnavailable && e.status === 529 && e.providerCode === 'overloaded_error' && e.retryable,
    )
  })

  it('400 invalid_request_error is terminal at once', async () => {
    const body = { type: 'error', error: { type: 'invalid_request_error', message: 'max_tokens: too large' } }
    const { server, provider } = await setup((_seen, res) => sendJson(res, 400, body))
    const { sleep } = recordingSleep()
    const run = callProvider({ provider, breaker: new CircuitBreaker('k') }, { model: 'c', input: 'x', idempotencyKey: KEY }, { clock: manualClock(0), signal: signal(), sleep })
    await expect(run).rejects.toSatisfy((e) => e instanceof ProviderRejected && e.message === 'anthropic: HTTP 400 invalid_request_error: max_tokens: too large')
    expect(server.requests).toHaveLength(1)
  })
})
