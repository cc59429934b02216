import type { Dispatcher } from 'undici'
import type { Clock } from '../clock.js'
import { AnthropicProvider, ANTHROPIC_DEFAULT_URL } from './anthropic.js'
import { CircuitBreaker, type BreakerState, type CircuitBreakerOptions } from './circuit-breaker.js'
import { EchoProvider, type EchoOptions } from './echo.js'
import { createDispatcher, endpointUrl, type ProviderTimeouts } from './http.js'
import { OpenAIProvider, OPENAI_DEFAULT_URL } from './openai.js'
import { PROVIDER_NAMES, type ModelConfig, type Provider, type ProviderName } from './types.js'

export type { ModelConfig, ProviderName } from './types.js'
export { PROVIDER_NAMES } from './types.js'

const ECHO_OPTIONS = ['delay_ms', 'delta_ms', 'fail_status', 'break_after', 'fail_times'] as const satisfies readonly (keyof EchoOptions)[]

export interface ProviderRegistryOptions {
  /** `AI_PROVIDER` */
  defaultProvider: ProviderName
  /** `AI_PROVIDER_URL` */
  defaultUrl?: string
  /** `AI_PROVIDER_API_KEY` */
  defaultApiKey?: string
  /** `AI_DEFAULT_MODEL` */
  defaultModel: string
  /** `AI_MODELS` */
  models: Record<string, ModelConfig>
  clock: Clock
  timeouts?: Partial<ProviderTimeouts>
  breaker?: Omit<CircuitBreakerOptions, 'onStateChange'>
  onBreakerStateChange?: (state: BreakerState, key: string) => void
}

export interface ResolvedModel {
  model: string
  provider: Provider
  /** Shared by every model that reaches the same provider name and base URL. */
  breaker: CircuitBreaker
  /** The model's configured `max_tokens`, if any (already applied by the provider as default and cap). */
  maxTokens?: number
  /** The models named by its `fallback` setting, in order (empty when none). */
  fallback: readonly string[]
}

export interface ProviderRegistry {
  /** Any model resolves; models not in `AI_MODELS` use the default provider. Validate with `allowedModels` first. */
  resolve(model: string): ResolvedModel
  /**
   * The models a job on `model` may run on, in order (SPEC §9): the model itself, then each of
   * its fallbacks, each followed by its own fallbacks (depth first), every model once.
   */
  chain(model: string): ResolvedModel[]
  /** `AI_MODELS` keys plus `AI_DEFAULT_MODEL`. */
  readonly allowedModels: string[]
  isAllowed(model: string): boolean
  /** Every breaker, for metrics and the admin page. */
  breakers(): CircuitBreaker[]
  /** Closes the HTTP connection pools. */
  close(): Promise<void>
}

interface Endpoint {
  provider: ProviderName
  url: string | undefined
  apiKey: string | undefined
  maxTokens: number | undefined
  echo: EchoOptions
}

/**
 * Builds the providers named by the configuration. Models that reach the same endpoint share one
 * provider instance, one connection pool per base URL, and one circuit breaker per provider name +
 * base URL (SPEC §6: "one per provider"). Echo models with the same simulated-failure options
 * count as one endpoint, so a deliberately failing echo model opens only its own breaker.
 * Throws at start-up on an unknown provider or a malformed URL, naming the setting.
 */
export function createProviderRegistry(options: ProviderRegistryOptions): ProviderRegistry {
  const providers = new Map<string, Provider>()
  const breakers = new Map<string, CircuitBreaker>()
  const dispatchers = new Map<string, Dispatcher>()
  const resolved = new Map<string, ResolvedModel>()

  const breakerFor = (key: string): CircuitBreaker => {
    let breaker = breakers.get(key)
    if (!breaker) {
      breaker = new CircuitBreaker(key, { ...options.breaker, onStateChange: options.onBreakerStateChange })
      breakers.set(key, breaker)
    }
    return breaker
  }

  const dispatcherFor = (baseUrl: string): Dispatcher => {
    let dispatcher = dispatchers.get(baseUrl)
    if (!dispatcher) {
      dispatcher = createDispatcher(options.timeouts)
      dispatchers.set(baseUrl, dispatcher)
    }
    return dispatcher
  }

  const build = (endpoint: Endpoint, setting: string): { provider: Provider; breaker: CircuitBreaker } => {
    if (endpoint.provider === 'echo') {
      const echo: EchoOptions = {}
      for (const key of ECHO_OPTIONS) {
        const value = endpoint.echo[key]
        if (value !== undefined) echo[key] = value
      }
      const key = Object.keys(echo).length === 0 ? 'echo' : `echo ${JSON.stringify(echo)}`
      let provider = providers.get(key)
      if (!provider) {
        provider = new EchoProvider(echo)
        providers.set(key, provider)
      }
      return { provider, breaker: breakerFor(key) }
    }
    const defaultUrl = endpoint.provider === 'openai' ? OPENAI_DEFAULT_URL : ANTHROPIC_DEFAULT_URL
    const baseUrl = (endpoint.url ?? defaultUrl).replace(/\/+$/, '')
    try {
      endpointUrl(baseUrl, '')
    } catch {
      throw new Error(`${setting}: not a valid URL`)
    }
    const breakerKey = `${endpoint.provider} ${baseUrl}`
    const instanceKey = JSON.stringify([endpoint.provider, baseUrl, endpoint.apiKey ?? null, endpoint.maxTokens ?? null])
    let provider = providers.get(instanceKey)
    if (!provider) {
      const common = { baseUrl, apiKey: endpoint.apiKey, maxTokens: endpoint.maxTokens, dispatcher: dispatcherFor(baseUrl), now: () => options.clock.now() }
      provider = endpoint.provider === 'openai' ? new OpenAIProvider(common) : new AnthropicProvider(common)
      providers.set(instanceKey, provider)
    }
    return { provider, breaker: breakerFor(breakerKey) }
  }

  if (!PROVIDER_NAMES.includes(options.defaultProvider)) throw new Error(`AI_PROVIDER: must be one of ${PROVIDER_NAMES.join(', ')}`)
  const defaultEndpoint: Endpoint = { provider: options.defaultProvider, url: options.defaultUrl, apiKey: options.defaultApiKey, maxTokens: undefined, echo: {} }
  const defaultEntry = build(defaultEndpoint, 'AI_PROVIDER_URL')

  for (const [model, config] of Object.entries(options.models)) {
    if (!PROVIDER_NAMES.includes(config.provider)) throw new Error(`AI_MODELS: model "${model}" has provider "${String(config.provider)}", expected one of ${PROVIDER_NAMES.join(', ')}`)
    // A model on the default provider inherits AI_PROVIDER_URL / AI_PROVIDER_API_KEY unless it sets its own.
    const sameAsDefault = config.provider === options.defaultProvider
    const endpoint: Endpoint = {
      provider: config.provider,
      url: config.url ?? (sameAsDefault ? options.defaultUrl : undefined),
      apiKey: config.api_key ?? (sameAsDefault ? options.defaultApiKey : undefined),
      maxTokens: config.max_tokens,
      echo: config,
    }
    const built = build(endpoint, `AI_MODELS: model "${model}" url`)
    const entry: ResolvedModel = { model, ...built, fallback: [...(config.fallback ?? [])] }
    if (config.max_tokens !== undefined) entry.maxTokens = config.max_tokens
    resolved.set(model, entry)
  }

  const resolve = (model: string): ResolvedModel => resolved.get(model) ?? { model, ...defaultEntry, fallback: [] }
  const allowedModels = [...new Set([...Object.keys(options.models), options.defaultModel])]
  const allowed = new Set(allowedModels)

  return {
    resolve,
    chain(model: string): ResolvedModel[] {
      const chain: ResolvedModel[] = []
      const seen = new Set<string>()
      // config.ts refuses cycles at start-up; `seen` also keeps a registry built by hand finite.
      const visit = (name: string): void => {
        if (seen.has(name)) return
        seen.add(name)
        const entry = resolve(name)
        chain.push(entry)
        for (const next of entry.fallback) visit(next)
      }
      visit(model)
      return chain
    },
    allowedModels,
    isAllowed: (model) => allowed.has(model),
    breakers: () => [...breakers.values()],
    async close() {
      await Promise.all([...dispatchers.values()].map((d) => d.close()))
    },
  }
}
