import { createSecretKey, randomUUID } from 'node:crypto'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import type { Logger } from 'pino'
import { authenticate, type WordPressAuthenticator } from './auth/authenticate.js'
import type { Principal } from './auth/principal.js'
import { systemClock, type Clock } from './clock.js'
import type { Config } from './config.js'
import { openDatabase, type DatabaseHandle } from './db/database.js'
import { runMigrations } from './db/migrate.js'
import { wordPressErrorHandler } from './error-handler.js'
import { toWordPressError } from './errors.js'
import type { RequestRules } from './jobs/job-request.js'
import { createMetrics, type Metrics } from './metrics.js'
import { createProviderRegistry, type ProviderRegistry } from './providers/registry.js'
import { jobRoutes } from './routes/jobs.js'
import { opsRoutes } from './routes/ops.js'
import { MemoryStore } from './store/memory-store.js'
import { RedisStore } from './store/redis-store.js'
import { ResilientStore } from './store/resilient-store.js'
import type { Store } from './store/types.js'
import { JobEvents } from './jobs/job-events.js'
import { WorkerPool } from './worker/pool.js'
import { createProviderExecutor } from './worker/provider-executor.js'
import { createDispatchExecutor } from './worker/dispatch-executor.js'
import { loadSigningKey, type DispatchSigningKey } from './dispatch/jwt.js'
import { webhookRoutes } from './routes/webhook.js'
import { adminRoutes } from './routes/admin.js'
import { eventRoutes } from './routes/events.js'
import { createWordPressAuthFor, hasWordPressTables, wordPressAuthenticator, wordPressSettings } from './auth/wordpress-adapter.js'

/** Everything routes and workers share; built once per app. */
export interface Gateway {
  config: Readonly<Config>
  handle: DatabaseHandle
  store: Store
  clock: Clock
  metrics: Metrics
  registry: ProviderRegistry
  rules: RequestRules
  pool: WorkerPool
  events: JobEvents
  /** Signs dispatch JWTs (external mode) and is published in the JWKS. */
  signingKey: DispatchSigningKey | undefined
  wordpress: WordPressAuthenticator | undefined
  /** SIGHUP: new salts from a re-read wp-config.php. */
  reloadWordPressSettings(config: Readonly<Config>): void
  authenticate(request: { method: string; headers: Record<string, string | string[] | undefined>; query: unknown; ip: string }): Promise<Principal>
}

declare module 'fastify' {
  interface FastifyInstance {
    gateway: Gateway
  }
}

export interface AppDeps {
  logger?: Logger | boolean
  clock?: Clock
  /** An open database; otherwise the app opens (and closes) its own from config. */
  handle?: DatabaseHandle
  store?: Store
  /** Start the worker pool (default true when WORKER_CONCURRENCY > 0). Tests drive `runOnce()` instead. */
  startWorkers?: boolean
  /** Run migrations at start (default true). */
  migrate?: boolean
  wordpress?: WordPressAuthenticator
  poolOptions?: { pollMs?: number; reapEveryMs?: number }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** `/?rest_route=/ai/v1/…` and `/index.php?rest_route=…` (plain permalinks) → `/wp-json/ai/v1/…`. */
export function rewritePlainPermalink(url: string, basePath: string): string {
  const q = url.indexOf('?')
  if (q < 0) return url
  const path = url.slice(0, q)
  if (path !== `${basePath}/` && path !== `${basePath}/index.php` && !(basePath !== '' && path === basePath)) return url
  const params = new URLSearchParams(url.slice(q + 1))
  const route = params.get('rest_route')
  if (!route || !/^\/ai\/v1(\/|$)/.test(route)) return url
  params.delete('rest_route')
  const rest = params.toString()
  // The route is a path, as in WordPress: a `?` or `#` in it stays part of the path (and matches
  // no route) instead of starting a query that would swallow the other parameters.
  const routePath = encodeURI(route).replace(/[?#]/g, (c) => encodeURIComponent(c))
  return `${basePath}/wp-json${routePath}${rest ? `?${rest}` : ''}`
}

async function createStore(config: Config, logger: Logger, metrics: Metrics, clock: Clock): Promise<Store> {
  const memory = new MemoryStore(() => clock.now())
  if (!config.redisUrl) {
    if (!config.embedded) logger.warn('REDIS_URL is not set: rate limits, replay guard and events stay in this process (fit for one replica only)')
    return memory
  }
  const redis = new RedisStore(config.redisUrl, `wpaig:${config.tablePrefix}:`)
  if (!(await redis.waitUntilReady(2_000))) logger.warn('Redis is not reachable at start-up: using per-process memory until it is')
  return new ResilientStore(redis, memory, logger, (operation) => metrics.storeFallbacks.inc({ operation }))
}

/**
 * Builds the gateway as a Fastify instance that never listens: it opens the database (running
 * migrations), the store and the providers, and starts the worker pool. `src/server.ts` listens.
 */
export async function buildApp(config: Readonly<Config>, deps: AppDeps = {}): Promise<FastifyInstance> {
  const clock = deps.clock ?? systemClock
  const basePath = new URL(config.publicUrl).pathname.replace(/\/+$/, '')
  const app = Fastify({
    ...(typeof deps.logger === 'object'
      ? { loggerInstance: deps.logger }
      : { logger: deps.logger === undefined ? { level: config.logLevel } : deps.logger }),
    bodyLimit: config.requestMaxBytes,
    trustProxy: config.trustProxy.length > 0 ? config.trustProxy : false,
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id']
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
    },
    rewriteUrl: (req) => rewritePlainPermalink(req.url ?? '/', basePath),
    routerOptions: { ignoreTrailingSlash: true },
    // A URL the router cannot decode (`%E0%A4%A`) or an over-long parameter never reaches the
    // hooks: answer it here in the WordPress shape, with its X-Request-Id like every response.
    frameworkErrors: (error, request, reply) => {
      // The only path parameters are job ids: one over 100 characters is no job (as `/jobs/abc` is not).
      const body = error.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? toWordPressError('ai_not_found', 'No job with that id.', 404)
        : toWordPressError('ai_invalid_request', 'url: is not a valid URL', 400, { field: 'url' })
      void (reply as unknown as FastifyReply).code(body.data.status).header('X-Request-Id', request.id).send(body)
    },
  }) as unknown as FastifyInstance
  const logger = app.log as unknown as Logger

  const metrics = createMetrics()
  const ownsHandle = !deps.handle
  const handle = deps.handle ?? await openDatabase({ url: config.databaseUrl, prefix: config.tablePrefix })
  let storeOpened: Store | undefined
  try {
    if (deps.migrate !== false) await runMigrations(handle, () => clock.now())
    const store = deps.store ?? await createStore(config, logger, metrics, clock)
    storeOpened = store
    const ownsStore = !deps.store

    const registry = createProviderRegistry({
      defaultProvider: config.provider,
      ...(config.providerUrl ? { defaultUrl: config.providerUrl } : {}),
      ...(config.providerApiKey ? { defaultApiKey: config.providerApiKey } : {}),
      defaultModel: config.defaultModel,
      models: config.models,
      clock,
      onBreakerStateChange: (state, key) => {
        metrics.breakerOpen.set({ provider: key }, state === 'open' ? 1 : 0)
        logger.warn({ provider: key, state }, 'provider circuit breaker changed state')
      },
    })
    const allowedModels = new Set(registry.allowedModels)
    const rules: RequestRules = {
      allowedModels,
      defaultModel: config.defaultModel,
      maxTokensFor: (model) => Math.min(config.maxTokens, config.models[model]?.max_tokens ?? Number.POSITIVE_INFINITY),
    }

    const signingKey = config.jwtPrivateKey
      ? loadSigningKey({
        privateKeyPem: config.jwtPrivateKey,
        ...(config.jwtKid ? { kid: config.jwtKid } : {}),
        ...(config.jwtPreviousPublicKey ? { previousPublicKeyPem: config.jwtPreviousPublicKey } : {}),
        ...(config.jwtPreviousKid ? { previousKid: config.jwtPreviousKid } : {}),
      })
      : undefined
    // The embedded default gets a generated key (src/dev-secrets.ts); anywhere else config refuses to start without one.
    if (config.workerUrl && !signingKey) throw new Error('AI_JWT_PRIVATE_KEY is required when AI_WORKER_URL is set')
    const execute = config.workerUrl && signingKey
      ? createDispatchExecutor({
        workerUrl: config.workerUrl,
        callbackUrl: `${new URL(config.publicUrl).origin}${config.routePrefix}/webhook`,
        key: signingKey,
        clock,
        timeoutMs: config.queueTimeoutSeconds * 1000,
        resultWaitMs: config.workerResultSeconds * 1000,
        encryptionKey: config.encryptionKey,
        onDispatch: (outcome) => metrics.dispatches.inc({ outcome }),
      })
      : createProviderExecutor({
        registry, clock, resultMaxBytes: config.resultMaxBytes, encryptionKey: config.encryptionKey, defaultModel: config.defaultModel,
        onProviderCall: (provider, outcome, ms) => metrics.providerDuration.observe({ provider, outcome }, ms / 1000),
      })

    const events = new JobEvents(store, logger)
    const pool = new WorkerPool({
      handle,
      clock,
      logger,
      concurrency: config.workerConcurrency,
      leaseMs: config.jobLeaseSeconds * 1000,
      maxAttempts: config.jobMaxAttempts,
      dispatch: config.workerUrl !== undefined,
      ...deps.poolOptions,
      execute,
      onChange: (jobId) => {
        metrics.jobsFinished.inc({ outcome: 'written' })
        events.changed(jobId)
      },
      onError: (where) => metrics.workerErrors.inc({ where: where.split(' ')[0] }),
    })

    // WordPress's own logins work wherever the database holds WordPress's user tables.
    const wordpressAuth = deps.wordpress === undefined && await hasWordPressTables(handle)
      ? createWordPressAuthFor(config, handle, store, clock)
      : undefined
    const wordpress = deps.wordpress ?? (wordpressAuth ? wordPressAuthenticator(wordpressAuth) : undefined)
    if (!wordpress && !config.embedded) logger.warn(`no ${config.tablePrefix}users table: WordPress cookies and application passwords are off; only signed tokens authenticate`)

    const publicTokenSecret = config.publicTokenSecret ? createSecretKey(Buffer.from(config.publicTokenSecret, 'utf8')) : undefined
    const gateway: Gateway = {
      config, handle, store, clock, metrics, registry, rules, pool, events, signingKey,
      wordpress,
      reloadWordPressSettings: (next) => wordpressAuth?.reloadSettings(wordPressSettings(next)),
      authenticate: (request) => authenticate(request, { publicTokenSecret, wordpress, now: () => clock.now() }),
    }
    app.decorate('gateway', gateway)

    app.addHook('onRequest', async (request, reply) => {
      reply.header('X-Request-Id', request.id)
    })
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched'
      metrics.httpRequests.inc({ method: request.method, route, status: reply.statusCode })
      metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000)
    })

    app.setErrorHandler(wordPressErrorHandler(config.requestMaxBytes, () => metrics.databaseUnavailable.inc()))

    app.setNotFoundHandler((_request, reply) => {
      reply.code(404).send(toWordPressError('rest_no_route', 'No route was found matching the URL and request method.', 404))
    })

    await app.register(opsRoutes)
    await app.register(jobRoutes, { prefix: config.routePrefix })
    await app.register(eventRoutes, { prefix: config.routePrefix })
    await app.register(webhookRoutes, { prefix: config.routePrefix })
    await app.register(adminRoutes, { prefix: config.routePrefix })

    await events.start((jobId) => pool.abortJob(jobId, 'cancel'), () => pool.wake())

    app.addHook('onClose', async () => {
      await pool.stop(deps.startWorkers === false ? 0 : config.shutdownGraceSeconds * 1000)
      await events.stop()
      await registry.close()
      if (ownsStore) await store.close()
      if (ownsHandle) await handle.close()
    })

    await app.ready()
    if (deps.startWorkers !== false && config.workerConcurrency > 0) pool.start()
    return app
  } catch (err) {
    // A start that fails half-way (migration, Redis, a bad key) leaves nothing open behind it.
    await app.close().catch(() => {})
    if (!deps.store) await storeOpened?.close().catch(() => {})
    if (ownsHandle) await handle.close().catch(() => {})
    throw err
  }
}
