import { randomUUID } from 'node:crypto'
import swagger from '@fastify/swagger'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type RouteOptions } from 'fastify'
import type { Logger } from 'pino'
import type { WordPressAuthenticator } from './auth/authenticate.js'
import type { Clock } from './clock.js'
import type { Config } from './config.js'
import type { DatabaseHandle, ServerVariablesReader } from './db/database.js'
import { toWordPressError } from './errors.js'
import { createLogger } from './logger.js'
import { authPlugin, type AuthKind } from './plugins/auth.js'
import { budgetsPlugin } from './plugins/budgets.js'
import { configPlugin } from './plugins/config.js'
import { dbPlugin } from './plugins/db.js'
import { eventsPlugin } from './plugins/events.js'
import { httpPlugin } from './plugins/http.js'
import { lifecyclePlugin } from './plugins/lifecycle.js'
import { metricsPlugin } from './plugins/metrics.js'
import { outboxPlugin } from './plugins/outbox.js'
import { poolPlugin } from './plugins/pool.js'
import { providersPlugin } from './plugins/providers.js'
import { resultsPlugin } from './plugins/results.js'
import { storePlugin } from './plugins/store.js'
import { adminPageRoutes } from './routes/admin-page.js'
import { adminRoutes } from './routes/admin.js'
import { eventRoutes } from './routes/events.js'
import { jobResultRoutes } from './routes/job-result.js'
import { jobRoutes } from './routes/jobs.js'
import { openAiRoutes } from './routes/openai.js'
import { opsRoutes } from './routes/ops.js'
import { privacyRoutes } from './routes/privacy.js'
import { usageRoutes } from './routes/usage.js'
import { webhookRoutes } from './routes/webhook.js'
import { wellKnownRoutes } from './routes/well-known.js'
import { WpError } from './schemas/common.js'
import { Job } from './schemas/job.js'
import type { ResultStore } from './results/result-store.js'
import type { LifecycleHooks } from './lifecycle/archive.js'
import { OpenAiError } from './schemas/openai.js'
import type { Store } from './store/types.js'

export interface AppDeps {
  /** A logger of the caller's, `false` for none; otherwise one at LOG_LEVEL. */
  logger?: Logger | boolean
  clock?: Clock
  /** An open database; otherwise the app opens (and closes) its own from config. */
  handle?: DatabaseHandle
  store?: Store
  /** Where large results are stored (SPEC §12); otherwise files under RESULT_STORE_DIR. */
  resultStore?: ResultStore
  /** Start the worker pool (default true when WORKER_CONCURRENCY > 0). Tests drive `runOnce()` instead. */
  startWorkers?: boolean
  /** Start the events sender when AI_EVENTS_URL is set (default: as `startWorkers`). Tests drive `app.outbox.runOnce()` instead. */
  startEvents?: boolean
  /** Run migrations at start (default true). */
  migrate?: boolean
  /** MySQL: reads `@@log_bin` and `@@binlog_format` for the start-up check; the server's own unless given. */
  serverVariables?: ServerVariablesReader
  wordpress?: WordPressAuthenticator
  poolOptions?: { pollMs?: number; reapEveryMs?: number }
  /** SPEC §4: 10 s. Tests shorten it. */
  bodyTimeoutMs?: number
  /** The data lifecycle (SPEC §12): hooks over src/lifecycle/hooks.ts, and the daily archive's timer. */
  lifecycle?: { hooks?: LifecycleHooks; start?: boolean; everyMs?: number; firstDelayMs?: number }
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * The gateway's own routes in the shared `ai/v1` namespace (SPEC §1). WordPress's own AI plugin
 * serves other names there (`ai/v1/logs`, `ai/v1/roles-users`), which stay with WordPress.
 */
export const GATEWAY_ROUTES = ['jobs', 'webhook', 'admin', 'usage', 'openai', 'openapi.json', '.well-known'] as const
const OWN_ROUTE = new RegExp(`^/ai/v1/(?:${GATEWAY_ROUTES.map((r) => r.replace(/\./g, '\\.')).join('|')})(?:/|$)`)

/**
 * `/?rest_route=/ai/v1/jobs…` and `/index.php?rest_route=…` (plain permalinks) → `/wp-json/ai/v1/jobs…`,
 * for the gateway's own route names only.
 */
export function rewritePlainPermalink(url: string, basePath: string): string {
  const q = url.indexOf('?')
  if (q < 0) return url
  const path = url.slice(0, q)
  if (path !== `${basePath}/` && path !== `${basePath}/index.php` && !(basePath !== '' && path === basePath)) return url
  const params = new URLSearchParams(url.slice(q + 1))
  const route = params.get('rest_route')
  if (!route || !OWN_ROUTE.test(route)) return url
  params.delete('rest_route')
  const rest = params.toString()
  // The route is a path, as in WordPress: a `?` or `#` in it stays part of the path (and matches
  // no route) instead of starting a query that would swallow the other parameters.
  const routePath = encodeURI(route).replace(/[?#]/g, (c) => encodeURIComponent(c))
  return `${basePath}/wp-json${routePath}${rest ? `?${rest}` : ''}`
}

const SECURITY: Record<AuthKind, Record<string, string[]>[]> = {
  user: [{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }, { publicToken: [] }],
  'wordpress-user': [{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }, { publicToken: [] }],
  admin: [{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }],
  'admin-or-signed': [{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }, { signedCall: [] }],
  'admin-page': [{ wordpressCookie: [] }],
  webhook: [],
  none: [],
}

/**
 * Builds the gateway as a Fastify instance that never listens: named plugins for the
 * configuration, HTTP basics, metrics, database, store, providers, events, pool, events outbox and auth, each
 * closing what it opened (in reverse order), then the routes. `src/server.ts` listens.
 */
export async function buildApp(config: Readonly<Config>, deps: AppDeps = {}): Promise<FastifyInstance> {
  const basePath = new URL(config.publicUrl).pathname.replace(/\/+$/, '')
  const logger = typeof deps.logger === 'object' ? deps.logger : createLogger(deps.logger === false ? 'silent' : config.logLevel)
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.requestMaxBytes,
    trustProxy: config.trustProxy.length > 0 ? config.trustProxy : false,
    requestIdHeader: false,
    // Every line of a request carries `request_id`, the X-Request-Id the client sees.
    logController: new LogController({ requestIdLogLabel: 'request_id' }),
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
      void (reply as unknown as FastifyReply).code(body.data.status)
        .header('X-Request-Id', request.id).header('X-Content-Type-Options', 'nosniff').send(body)
    },
  }).withTypeProvider<TypeBoxTypeProvider>()

  try {
    await app.register(configPlugin, { config, clock: deps.clock })
    await app.register(metricsPlugin)
    await app.register(httpPlugin, { bodyTimeoutMs: deps.bodyTimeoutMs })
    await app.register(dbPlugin, { handle: deps.handle, migrate: deps.migrate, serverVariables: deps.serverVariables })
    await app.register(storePlugin, { store: deps.store })
    await app.register(budgetsPlugin)
    await app.register(resultsPlugin, { store: deps.resultStore })
    await app.register(providersPlugin)
    await app.register(eventsPlugin)
    await app.register(poolPlugin, { start: deps.startWorkers, pollMs: deps.poolOptions?.pollMs, reapEveryMs: deps.poolOptions?.reapEveryMs })
    await app.register(outboxPlugin, { start: deps.startEvents ?? deps.startWorkers !== false })
    await app.register(authPlugin, { wordpress: deps.wordpress })
    await app.register(lifecyclePlugin, { ...deps.lifecycle, start: deps.lifecycle?.start ?? deps.startWorkers })

    // The OpenAPI document is generated from the same schemas that validate requests.
    app.addSchema(WpError)
    app.addSchema(Job)
    app.addSchema(OpenAiError)
    app.addHook('onRoute', (route: RouteOptions) => {
      const kind = (route.config as { auth?: AuthKind } | undefined)?.auth ?? 'user'
      if (route.schema) (route.schema as Record<string, unknown>).security = SECURITY[kind]
    })
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'wp-ai-gateway',
          version: '1',
          description: 'AI jobs beside WordPress: create, poll (ETag/304) or stream (SSE), cancel; signed webhooks from external workers; the admin API. Errors use the WordPress REST shape.',
        },
        servers: [{ url: new URL(config.publicUrl).origin }],
        components: {
          securitySchemes: {
            wordpressCookie: { type: 'apiKey', in: 'cookie', name: 'wordpress_logged_in_{COOKIEHASH}', description: 'The WordPress logged-in cookie; needs the REST nonce too' },
            wordpressNonce: { type: 'apiKey', in: 'header', name: 'X-WP-Nonce', description: 'wp_create_nonce(\'wp_rest\'), or the _wpnonce query parameter' },
            applicationPassword: { type: 'http', scheme: 'basic', description: 'A WordPress application password' },
            publicToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'HS256 with AI_PUBLIC_TOKEN_SECRET: sub, exp, and sid for visitors' },
            signedCall: { type: 'apiKey', in: 'header', name: 'webhook-signature', description: 'A server-to-server call signed the Standard Webhooks way with AI_EVENTS_SECRET (with webhook-id and webhook-timestamp); the privacy routes only' },
          },
        },
      },
      refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
    })

    await app.register(opsRoutes)
    await app.register(async (api) => {
      await api.register(jobRoutes)
      await api.register(jobResultRoutes)
      await api.register(eventRoutes)
      await api.register(webhookRoutes)
      await api.register(adminRoutes)
      await api.register(privacyRoutes)
      await api.register(usageRoutes)
      await api.register(adminPageRoutes)
      await api.register(wellKnownRoutes)
      await api.register(openAiRoutes, { prefix: '/openai' })
      api.get('/openapi.json', {
        config: { auth: 'none' },
        schema: { summary: 'This document (OpenAPI 3.1)', tags: ['meta'], response: { 200: { description: 'OpenAPI 3.1', content: { 'application/json': { schema: { type: 'object', additionalProperties: true } } } } } },
      }, async () => app.swagger())
    }, { prefix: config.routePrefix })

    await app.ready()
    return app as unknown as FastifyInstance
  } catch (err) {
    // A start that fails half-way (migration, Redis, a bad key) leaves nothing open behind it:
    // every plugin registered so far closes what it opened.
    await app.close().catch(() => {})
    throw err
  }
}
