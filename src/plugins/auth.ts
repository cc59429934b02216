import { createSecretKey } from 'node:crypto'
import { PassThrough, type Readable } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { authenticate, authenticateAdminPage, type AdminPageSession, type AuthDeps, type WordPressAuthenticator } from '../auth/authenticate.js'
import type { Principal } from '../auth/principal.js'
import { isSignedCall, verifySignedCall } from '../auth/signed-request.js'
import { createWordPressAuthFor, wordPressAuthenticator, wordPressSettings } from '../auth/wordpress-adapter.js'
import type { WordPressAuth } from '../auth/wordpress-auth.js'
import { fixedWordPressSource, lazyWordPressSource } from '../auth/wordpress-source.js'
import type { Config } from '../config.js'
import { hasWordPressTables } from '../db/wordpress-repository.js'
import { ApiError } from '../errors.js'

/**
 * What a route needs of its caller, said once in the route's `config.auth`:
 * - `user`: any authenticated caller (WordPress cookie + nonce, application password, token);
 * - `wordpress-user`: a WordPress user by any of those methods (a token only with `sub` > 0): a
 *   visitor's token is refused with 403, so the site's provider key is no open relay (SPEC §11);
 * - `admin`: a WordPress user with AI_ADMIN_CAPABILITY (a token never has it);
 * - `admin-page`: the admin page load: the WordPress logged-in cookie alone (no nonce, as
 *   opening wp-admin; no token or application password) of a user with AI_ADMIN_CAPABILITY.
 *   The request gets `adminPage`, with a fresh `wp_rest` nonce for the page's own calls;
 * - `admin-or-signed`: as `admin`, or instead a server-to-server call signed the Standard Webhooks
 *   way with AI_EVENTS_SECRET (the privacy routes, which WordPress calls; src/auth/signed-request.ts).
 *   A request with a `webhook-signature` header is judged by its signature alone;
 * - `webhook`: no caller; the route verifies a signature over the raw body itself;
 * - `none`: public (health checks, the JWKS, the OpenAPI document).
 * A route that says nothing is treated as `user`.
 */
export type AuthKind = 'user' | 'wordpress-user' | 'admin' | 'admin-or-signed' | 'admin-page' | 'none' | 'webhook'

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: AuthKind
  }
  interface FastifyRequest {
    /** Who the request acts for; set by the auth hooks on every `user`, `admin`, `admin-or-signed` and `admin-page` route. */
    principal: Principal
    /** Set on `admin-page` routes: the nonce the page embeds for its calls, and whose it is. */
    adminPage: AdminPageSession | undefined
  }
  interface FastifyInstance {
    auth: GatewayAuth
  }
}

export interface GatewayAuth {
  /** The chain of SPEC §5: cookie + nonce, application password, signed token. Throws 401/403/429. */
  authenticate(request: FastifyRequest): Promise<Principal>
  /** WordPress's own logins, once the database holds WordPress's user tables. */
  readonly wordpress: WordPressAuthenticator | undefined
  /** SIGHUP: new salts from a re-read wp-config.php. */
  reloadWordPressSettings(config: Readonly<Config>): void
}

export interface AuthPluginOptions {
  /** A WordPress authenticator of the caller's (tests); otherwise built when the WordPress tables exist. */
  wordpress?: WordPressAuthenticator | undefined
}

/** A signed call's body is a small JSON object (`{}`); more is no privacy call. */
const SIGNED_BODY_MAX_BYTES = 65_536

/** The whole body, up to `limit` bytes (413 beyond). */
async function readBody(payload: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of payload) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer)
    size += buf.length
    if (size > limit) throw new ApiError('ai_payload_too_large', `A signed call's body may be at most ${limit} bytes.`)
    chunks.push(buf)
  }
  return Buffer.concat(chunks)
}

function forbidden(): ApiError {
  return new ApiError('ai_forbidden', 'This needs the administrator capability.')
}

/** Holds AI_ADMIN_CAPABILITY, asking past the caches before refusing (a grant is never delayed). */
async function asAdmin(principal: Principal): Promise<Principal> {
  if (principal.isAdmin) return principal
  const fresh = principal.recheck ? await principal.recheck() : principal
  if (!fresh.isAdmin) throw forbidden()
  return fresh
}

/** Authentication as one `onRequest` hook, so no handler can forget it. */
export const authPlugin = fp<AuthPluginOptions>(async (app, options) => {
  const { config, clock, db, store } = app
  let wordpressAuth: WordPressAuth | undefined
  let settings = wordPressSettings(config)
  const source = options.wordpress !== undefined
    ? fixedWordPressSource(options.wordpress)
    : lazyWordPressSource({
      foundAtStart: await hasWordPressTables(db),
      hasTables: () => hasWordPressTables(db),
      build: () => {
        wordpressAuth = createWordPressAuthFor(config, db, store, clock, settings)
        return wordPressAuthenticator(wordpressAuth)
      },
      now: () => clock.now(),
      onFound: () => app.log.info(`${config.tablePrefix}users table found: WordPress cookies and application passwords are on`),
    })
  if (!source.current && !config.embedded) {
    app.log.warn(`no ${config.tablePrefix}users table yet: WordPress cookies and application passwords are off until it exists (looked for again every 30 s while requests need it)`)
  }

  // Imported once: a KeyObject spares the key conversion on every verify.
  const publicTokenSecret = config.publicTokenSecret ? createSecretKey(Buffer.from(config.publicTokenSecret, 'utf8')) : undefined
  const deps: AuthDeps = { publicTokenSecret, wordpress: source, now: () => clock.now() }
  const auth: GatewayAuth = {
    authenticate: (request) => authenticate(request, deps),
    get wordpress() {
      return source.current
    },
    reloadWordPressSettings: (next) => {
      settings = wordPressSettings(next)
      wordpressAuth?.reloadSettings(settings)
    },
  }
  app.decorate('auth', auth)
  app.decorateRequest('principal', null as unknown as Principal)
  app.decorateRequest('adminPage', undefined)

  app.addHook('onRequest', async (request) => {
    // Unmatched URLs get their 404 from the not-found handler, whoever asks.
    if (request.routeOptions.url === undefined) return
    const kind = request.routeOptions.config.auth ?? 'user'
    if (kind === 'none' || kind === 'webhook') return
    // Verified in preParsing, where the exact body bytes are at hand.
    if (kind === 'admin-or-signed' && isSignedCall(request.headers)) return
    if (kind === 'admin-page') {
      const { principal, page } = await authenticateAdminPage(request, deps)
      request.principal = await asAdmin(principal)
      request.adminPage = page
      return
    }
    const principal = await auth.authenticate(request)
    if (kind === 'wordpress-user' && principal.userId === 0) {
      throw new ApiError('ai_forbidden', 'Only WordPress users may call this: a visitor token is not accepted here.')
    }
    request.principal = kind === 'admin' || kind === 'admin-or-signed' ? await asAdmin(principal) : principal
  })

  // A signed call: the signature covers the exact body bytes, so they are read here, verified
  // (signature, timestamp, single-use webhook-id), and handed on to the parser unchanged.
  const signedKeyPrefix = `${config.tablePrefix}:`
  app.addHook('preParsing', async (request, _reply, payload) => {
    if (request.routeOptions.config.auth !== 'admin-or-signed' || !isSignedCall(request.headers)) return payload
    const raw = await readBody(payload, SIGNED_BODY_MAX_BYTES)
    request.principal = await verifySignedCall({ rawBody: raw, headers: request.headers, secret: config.eventsSecret, nowMs: clock.now(), store, keyPrefix: signedKeyPrefix })
    const replay = new PassThrough()
    replay.end(raw)
    return replay
  })
  app.addHook('preValidation', async (request) => {
    // Belt and braces: no admin-or-signed handler runs without one of the two having passed.
    if (request.routeOptions.config.auth === 'admin-or-signed' && !request.principal) throw new ApiError('ai_unauthorized', 'Authentication required.')
  })
}, { name: 'auth', dependencies: ['config', 'db', 'store'] })
