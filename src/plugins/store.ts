import fp from 'fastify-plugin'
import { MemoryStore } from '../store/memory-store.js'
import { RedisStore } from '../store/redis-store.js'
import { ResilientStore } from '../store/resilient-store.js'
import type { Store } from '../store/types.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Redis (falling back to process memory while it is down), or process memory without REDIS_URL. */
    store: Store
  }
}

export interface StorePluginOptions {
  /** A store of the caller's; otherwise one is built from REDIS_URL and closed with the app. */
  store?: Store | undefined
}

export const storePlugin = fp<StorePluginOptions>(async (app, options) => {
  if (options.store) {
    app.decorate('store', options.store)
    return
  }
  const { config, clock, log } = app
  const memory = new MemoryStore(() => clock.now())
  let store: Store = memory
  if (!config.redisUrl) {
    if (!config.embedded) log.warn('REDIS_URL is not set: rate limits, replay guard and events stay in this process (fit for one replica only)')
  } else {
    const redis = new RedisStore(config.redisUrl, `wpaig:${config.tablePrefix}:`)
    if (!(await redis.waitUntilReady(2_000))) log.warn('Redis is not reachable at start-up: using per-process memory until it is')
    store = new ResilientStore(redis, memory, log, (operation) => app.metrics.storeFallbacks.inc({ operation }))
  }
  app.addHook('onClose', () => store.close())
  app.decorate('store', store)
}, { name: 'store', dependencies: ['config', 'metrics'] })
