import { afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { AnthropicProvider } from '../../src/providers/anthropic.js'
import { EchoProvider } from '../../src/providers/echo.js'
import { OpenAIProvider } from '../../src/providers/openai.js'
import { createProviderRegistry, type ProviderRegistry } from '../../src/providers/registry.js'
import { KEY, sendJson, startFakeServer, type FakeServer } from './fake-server.js'

let registry: ProviderRegistry | undefined
let server: FakeServer | undefined

afterEach(async () => {
  await registry?.close()
  await server?.close()
  registry = undefined
  server = undefined
})

describe('createProviderRegistry', () => {
  it('allows AI_MODELS keys plus the default model; other models use the default provider', () => {
    registry = createProviderRegistry({
      defaultProvider: 'echo',
      defaultModel: 'echo',
      models: { slow: { provider: 'echo', delay_ms: 50 }, gpt: { provider: 'openai', api_key: 'k', max_tokens: 256 } },
      clock: manualClock(0),
    })
    expect(registry.allowedModels.sort()).toEqual(['echo', 'gpt', 'slow'])
    expect(registry.isAllowed('other')).toBe(false)
    const fallback = registry.resolve('echo')
    expect(fallback.provider).toBeInstanceOf(EchoProvider)
    expect(registry.resolve('unlisted').provider).toBe(fallback.provider)
    const slow = registry.resolve('slow')
    expect((slow.provider as EchoProvider).options).toEqual({ delay_ms: 50 })
    expect(slow.breaker).not.toBe(fallback.breaker)
    const gpt = registry.resolve('gpt')
    expect(gpt.provider).toBeInstanceOf(OpenAIProvider)
    expect((gpt.provider as OpenAIProvider).baseUrl).toBe('https://api.openai.com/v1')
    expect(gpt.maxTokens).toBe(256)
    expect(gpt.breaker.key).toBe('openai https://api.openai.com/v1')
  })

  it('shares one breaker per provider and base URL', () => {
    registry = createProviderRegistry({
      defaultProvider: 'anthropic',
      defaultUrl: 'https://llm.example.com/',
      defaultApiKey: 'default-key',
      defaultModel: 'claude-a',
      models: {
        'claude-b': { provider: 'anthropic', max_tokens: 100 },
        'claude-c': { provider: 'anthropic', url: 'https://other.example.com' },
        'gpt-same-host': { provider: 'openai', url: 'https://llm.example.com' },
      },
      clock: manualClock(0),
    })
    const a = registry.resolve('claude-a')
    const b = registry.resolve('claude-b')
    expect(a.provider).toBeInstanceOf(AnthropicProvider)
    expect((b.provider as AnthropicProvider).baseUrl).toBe('https://llm.example.com')
    expect(b.provider).not.toBe(a.provider) // different max_tokens
    expect(b.breaker).toBe(a.breaker)
    expect(registry.resolve('claude-c').breaker).not.toBe(a.breaker)
    expect(registry.resolve('gpt-same-host').breaker).not.toBe(a.breaker)
    expect(registry.breakers()).toHaveLength(3)
  })

  it('a model on the default provider inherits AI_PROVIDER_URL and the key, and reaches that server', async () => {
    server = await startFakeServer((_seen, res) => sendJson(res, 200, { choices: [{ message: { content: 'hi' }, finish_reason: 'stop' }], usage: {} }))
    registry = createProviderRegistry({
      defaultProvider: 'openai',
      defaultUrl: `${server.url}/v1`,
      defaultApiKey: 'sk-default',
      defaultModel: 'gpt-default',
      models: { 'gpt-small': { provider: 'openai', max_tokens: 64 } },
      clock: manualClock(0),
    })
    const result = await registry.resolve('gpt-small').provider.complete({ model: 'gpt-small', input: 'x', idempotencyKey: KEY, signal: new AbortController().signal })
    expect(result.output).toBe('hi')
    expect(server.requests[0]!.path).toBe('/v1/chat/completions')
    expect(server.requests[0]!.headers.authorization).toBe('Bearer sk-default')
    expect((server.requests[0]!.body as { max_tokens: number }).max_tokens).toBe(64)
  })

  it('rejects a malformed URL at start-up, naming the model', () => {
    expect(() =>
      createProviderRegistry({ defaultProvider: 'echo', defaultModel: 'echo', models: { bad: { provider: 'openai', url: 'not a url' } }, clock: manualClock(0) }),
    ).toThrow('AI_MODELS: model "bad" url: not a valid URL')
  })
})
