import fp from 'fastify-plugin'
import type { RequestRules } from '../jobs/job-request.js'
import { createProviderRegistry, type ProviderRegistry } from '../providers/registry.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The providers named by AI_PROVIDER and AI_MODELS, with one circuit breaker per endpoint. */
    providers: ProviderRegistry
    /** What a create may ask for: the allowed models and each model's token cap. */
    requestRules: RequestRules
  }
}

/** Builds the provider registry (HTTP pools and breakers) and closes its connections with the app. */
export const providersPlugin = fp(async (app) => {
  const { config, clock, metrics, log } = app
  const registry = createProviderRegistry({
    defaultProvider: config.provider,
    ...(config.providerUrl ? { defaultUrl: config.providerUrl } : {}),
    ...(config.providerApiKey ? { defaultApiKey: config.providerApiKey } : {}),
    defaultModel: config.defaultModel,
    models: config.models,
    clock,
    onBreakerStateChange: (state, key) => {
      metrics.breakerOpen.set({ provider: key }, state === 'open' ? 1 : 0)
      log.warn({ provider: key, state }, 'provider circuit breaker changed state')
    },
  })
  app.addHook('onClose', () => registry.close())
  app.decorate('providers', registry)
  app.decorate('requestRules', {
    allowedModels: new Set(registry.allowedModels),
    defaultModel: config.defaultModel,
    maxTokensFor: (model: string) => Math.min(config.maxTokens, config.models[model]?.max_tokens ?? Number.POSITIVE_INFINITY),
  })
}, { name: 'providers', dependencies: ['config', 'metrics'] })
