/**
 * WordPress authentication for the gateway: the logged-in cookie with its REST nonce, the same
 * cookie alone for the admin page load, application passwords, and the capability check of
 * tokens issued for WordPress users. It reads WordPress's tables (through
 * wordpress-repository.ts) and never writes them.
 *
 * Caching: user rows, user meta (session tokens, capabilities) and options are kept in process
 * memory for `cacheTtlMs` (default 5 s, never more than 10 s), so a burst of requests from one
 * user costs one set of queries, while a logout, a password change or a role change made in
 * WordPress takes effect within that time on every replica (SPEC §5: within 10 s). Caches may
 * delay a revocation, never a grant: a cookie refused on cached rows for a reason newer rows
 * could change (a user, password hash, session or salt option the cache lacks) is checked once
 * more past the cache before it is refused, and every user this module authenticates carries a
 * `recheck()` that reads its capabilities past the cache, so a new login or a role just given
 * works at once. The `_application_passwords` meta is always read fresh when a password has to
 * be verified, and a verified password is trusted for at most 5 s (see app-password-auth.ts), so
 * a revoked application password stops working within 5 s too.
 *
 * Secrets (salts, keys, cookies, passwords) are never logged: this module does not log at all,
 * and its results carry refusal reasons, never the values involved.
 */
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import * as repo from '../db/wordpress-repository.js'
import type { Store } from '../store/types.js'
import {
  createApplicationPasswordAuthenticator, type ApplicationPasswordRefusal,
} from './app-password-auth.js'
import { cachedReads, freshReads, TtlCache, type Reads } from './ttl-cache.js'
import { resolveCapabilities, type UserCapabilities } from '../wordpress/capabilities.js'
import { maybeUnserialize, type PhpValue } from '../wordpress/php-unserialize.js'
import { cookieHashFor, loggedInCookieName, readCookie, validateLoggedInCookie, type CookieRefusal } from '../wordpress/cookie.js'
import { createNonce, DEFAULT_NONCE_LIFE_SECONDS, verifyNonce } from '../wordpress/nonce.js'
import { wpSalt, type SaltScheme, type SaltSettings } from '../wordpress/salts.js'

/** The wp-config values authentication depends on (SPEC §2). */
export interface WordPressAuthSettings extends SaltSettings {
  /** Overrides md5(siteurl) as the cookie name's suffix, like the COOKIEHASH constant. */
  COOKIEHASH?: string | undefined
  /** WP_SITEURL overrides the `siteurl` option (WordPress filters option_siteurl with it). */
  WP_SITEURL?: string | undefined
}

export interface WordPressAuthOptions {
  db: DatabaseHandle
  settings: WordPressAuthSettings
  store: Store
  clock: Clock
  /** The `nonce_life` filter's value; WordPress's default is one day. */
  nonceLifeSeconds?: number
  /** AI_CREATE_CAPABILITY, e.g. `read`. */
  createCapability: string
  /** AI_ADMIN_CAPABILITY, e.g. `manage_options`. */
  adminCapability: string
  /** How long WordPress rows are cached in memory. Default 5000 ms, capped at 10 000; 0 disables. */
  cacheTtlMs?: number
  /** Failed application-password attempts per client address and per user (default 10 per 5 min). */
  throttle?: { maxFailures?: number; windowMs?: number }
  /** How long a verified application password is trusted (default 5000 ms, capped at 10 000). */
  verifiedPasswordCacheMs?: number
}

export interface AuthenticatedUser {
  kind: 'user'
  method: 'cookie' | 'application_password'
  userId: number
  login: string
  roles: readonly string[]
  /** Every granted capability (super admins: see `can`). */
  capabilities: ReadonlySet<string>
  /** WP_User::has_cap() for a primitive capability. */
  can(capability: string): boolean
  /** `can(createCapability)`. */
  canCreate: boolean
  /** `can(adminCapability)`. */
  isAdmin: boolean
  /** The same user with capabilities read past the cache (a refusal asks before it refuses). */
  recheck(): Promise<AuthenticatedUser>
}

/** What a token for WordPress user `userId` may do (SPEC §5: held to AI_CREATE_CAPABILITY). */
export interface TokenUser {
  userId: number
  /** False when no such user is in `{prefix}users`. */
  exists: boolean
  canCreate: boolean
  /** The user's roles (budgets follow them, SPEC §8). */
  roles: readonly string[]
  recheck(): Promise<TokenUser>
}

export type CookieNoneReason = 'no_cookie' | CookieRefusal

/**
 * - `user`: valid cookie and valid nonce.
 * - `anonymous`: valid cookie without any nonce; WordPress then treats the request as logged
 *   out, and the search for credentials ends (SPEC §5).
 * - `invalid_nonce`: valid cookie, wrong or expired nonce: answer `403 rest_cookie_invalid_nonce`.
 * - `none`: no usable cookie; try the next method.
 */
export type CookieAuthResult =
  | AuthenticatedUser
  | { kind: 'anonymous' }
  | { kind: 'invalid_nonce' }
  | { kind: 'none'; reason: CookieNoneReason }

/**
 * The admin page load (SPEC §4 `GET /admin`): the cookie alone, as opening wp-admin, and a fresh
 * `wp_rest` nonce for the page's own calls.
 */
export type PageCookieResult =
  | { kind: 'page'; user: AuthenticatedUser; nonce: string }
  | { kind: 'none'; reason: CookieNoneReason }

export type BasicAuthResult =
  | AuthenticatedUser
  | { kind: 'invalid'; reason: ApplicationPasswordRefusal }
  | { kind: 'throttled'; retryAfterSeconds: number }

export interface CookieAuthRequest {
  /** The HTTP method: POST gets WordPress's hour of grace after the cookie expires. */
  method: string
  cookieHeader: string | undefined
  /**
   * The REST nonce, or null/undefined when none was sent. WordPress reads `_wpnonce` from the
   * request first and falls back to the `X-WP-Nonce` header; callers should keep that order.
   */
  nonce: string | null | undefined
}

export interface BasicAuthRequest {
  authorizationHeader: string | undefined
  /** The client address as TRUST_PROXY resolves it; failed attempts are throttled per address. */
  clientIp: string
}

export interface WordPressAuth {
  authenticateCookie(request: CookieAuthRequest): Promise<CookieAuthResult>
  /** The cookie without a nonce, for the admin page load only; creates the page's nonce. */
  authenticatePageCookie(request: Omit<CookieAuthRequest, 'nonce'>): Promise<PageCookieResult>
  authenticateBasic(request: BasicAuthRequest): Promise<BasicAuthResult>
  /** The user behind a token's `sub` (> 0) and whether that user may create jobs. */
  tokenUser(userId: number): Promise<TokenUser>
  /** The cookie name: `wordpress_logged_in_` + COOKIEHASH. */
  loggedInCookieName(): Promise<string>
  /** Takes new salts/COOKIEHASH (SIGHUP re-reads wp-config.php) and drops every cache. */
  reloadSettings(settings: WordPressAuthSettings): void
  /** Drops cached WordPress rows and verified passwords. */
  clearCaches(): void
}

const DEFAULT_CACHE_TTL_MS = 5_000
const MAX_CACHE_TTL_MS = 10_000
const NONCE_ACTION = 'wp_rest'

/**
 * Refusals that newer rows could turn into a grant: a user created since, a password changed
 * since (the cookie's pass_frag), a session opened since, a salt WordPress stored since. An
 * expired or malformed cookie stays refused whatever the rows say.
 */
const REFUSALS_ROWS_CAN_CHANGE: ReadonlySet<CookieNoneReason> = new Set(['unknown_user', 'bad_hmac', 'no_session', 'no_salt'])

/** One try at a result, and whether trying again past the cache could change it. */
interface Attempt<T> {
  result: T
  retry: boolean
}

/** Tries on rows through the cache; tries once more past it when the cache may be behind. */
async function cachedThenFresh<T>(attempt: (reads: Reads) => Promise<Attempt<T>>): Promise<T> {
  const first = await attempt(cachedReads())
  return first.retry ? (await attempt(freshReads())).result : first.result
}

function unserializeMeta(raw: string | null | undefined): PhpValue | undefined {
  return raw === undefined || raw === null ? undefined : maybeUnserialize(raw)
}

/** Builds the gateway's WordPress authentication over the shared database. */
export function createWordPressAuth(options: WordPressAuthOptions): WordPressAuth {
  const { db: handle, clock } = options
  const db = handle.db
  const nonceLife = options.nonceLifeSeconds ?? DEFAULT_NONCE_LIFE_SECONDS
  const cache = new TtlCache(Math.min(options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS, MAX_CACHE_TTL_MS), () => clock.now())
  let settings: WordPressAuthSettings = { ...options.settings }
  const nowSeconds = () => Math.floor(clock.now() / 1000)

  const userByLogin = (login: string, reads?: Reads) => cache.get(`login:${login}`, () => repo.getUserByLogin(db, login), reads)
  const userByEmail = (email: string, reads?: Reads) => cache.get(`email:${email}`, () => repo.getUserByEmail(db, email), reads)
  const userById = (userId: number, reads?: Reads) => cache.get(`id:${userId}`, () => repo.getUserById(db, userId), reads)
  const userMeta = (userId: number, key: string, reads?: Reads) =>
    cache.get(`meta:${userId}:${key}`, async () => unserializeMeta(await repo.getUserMeta(db, userId, key)), reads)
  // A multisite is recognised by its sitemeta table (the MULTISITE constant is PHP's own). The
  // answer is kept until the caches are cleared: tables do not come and go under a live site.
  let multisite: Promise<boolean> | undefined
  const isMultisite = (): Promise<boolean> => {
    if (!multisite) {
      const pending = repo.getSiteMeta(db, 'site_admins').then((meta) => meta.table)
      pending.catch(() => {
        if (multisite === pending) multisite = undefined
      })
      multisite = pending
    }
    return multisite
  }
  const siteAdmins = (reads?: Reads) => cache.get('site_admins', async () => unserializeMeta(await repo.getSiteAdmins(db)), reads)

  /** get_site_option(): the network's sitemeta on a multisite, the options table otherwise. */
  const siteOption = (name: string, reads?: Reads) => cache.get(`site_option:${name}`, async () => {
    const raw = (await isMultisite())
      ? await repo.getSiteMeta(db, name).then((meta) => (meta.table ? meta.value : undefined))
      : await repo.getOption(db, name)
    return unserializeMeta(raw)
  }, reads)
  const option = (name: string, reads?: Reads) => cache.get(`option:${name}`, async () => unserializeMeta(await repo.getOption(db, name)), reads)
  const salt = (scheme: SaltScheme, reads?: Reads) => wpSalt(scheme, settings, (name) => siteOption(name, reads))

  async function cookieName(): Promise<string> {
    if (settings.COOKIEHASH !== undefined) return loggedInCookieName(settings.COOKIEHASH)
    const siteurl = settings.WP_SITEURL ?? (await siteOption('siteurl'))
    return loggedInCookieName(cookieHashFor(typeof siteurl === 'string' ? siteurl : undefined))
  }

  async function capabilitiesOf(userId: number, login: string, reads: Reads): Promise<UserCapabilities> {
    // On a multisite the main site's prefix is the base prefix, so `wp_capabilities` either way.
    const multi = await isMultisite()
    const [userCaps, roleDefinitions, superAdmins] = await Promise.all([
      userMeta(userId, `${handle.prefix}capabilities`, reads),
      option(`${handle.prefix}user_roles`, reads),
      multi ? siteAdmins(reads) : undefined,
    ])
    const superAdmin = multi ? { login, siteAdmins: superAdmins } : undefined
    return resolveCapabilities({ userCaps, roleDefinitions, superAdmin })
  }

  async function authenticatedUser(userId: number, login: string, method: AuthenticatedUser['method'], reads: Reads): Promise<AuthenticatedUser> {
    const caps = await capabilitiesOf(userId, login, reads)
    return {
      kind: 'user',
      method,
      userId,
      login,
      roles: caps.roles,
      capabilities: caps.granted,
      can: caps.can,
      canCreate: caps.can(options.createCapability),
      isAdmin: caps.can(options.adminCapability),
      recheck: () => authenticatedUser(userId, login, method, freshReads()),
    }
  }

  async function tokenUser(userId: number, reads: Reads): Promise<TokenUser> {
    const row = await userById(userId, reads)
    const caps = row === undefined ? undefined : await capabilitiesOf(row.ID, row.user_login, reads)
    return { userId, exists: row !== undefined, canCreate: caps?.can(options.createCapability) ?? false, roles: caps?.roles ?? [], recheck: () => tokenUser(userId, freshReads()) }
  }

  /** wp_validate_auth_cookie() on rows read through `reads`. */
  function validateCookie(value: string, method: string, reads: Reads) {
    return validateLoggedInCookie(value, {
      nowSeconds: nowSeconds(),
      withGrace: method === 'POST',
      loggedInSalt: () => salt('logged_in', reads),
      findUserByLogin: async (login) => {
        const row = await userByLogin(login, reads)
        return row && { id: row.ID, login: row.user_login, passwordHash: row.user_pass }
      },
      sessionTokens: (userId) => userMeta(userId, 'session_tokens', reads),
    })
  }

  /** The logged-in cookie's value, or undefined when there is none to check. */
  async function loggedInCookie(cookieHeader: string | undefined): Promise<string | undefined> {
    const value = readCookie(cookieHeader, await cookieName())
    // wp_validate_logged_in_cookie() skips an empty cookie, as PHP's empty() does "0".
    return value === undefined || value === '' || value === '0' ? undefined : value
  }

  async function restCookieAttempt(value: string, request: CookieAuthRequest, reads: Reads): Promise<Attempt<CookieAuthResult>> {
    const cookie = await validateCookie(value, request.method, reads)
    if (!cookie.ok) return { result: { kind: 'none', reason: cookie.reason }, retry: reads.servedFromCache && REFUSALS_ROWS_CAN_CHANGE.has(cookie.reason) }
    // rest_cookie_check_errors(): a logged-in cookie without a nonce makes the request
    // anonymous (CSRF protection); a nonce that is present but wrong is an error.
    if (request.nonce === undefined || request.nonce === null) return { result: { kind: 'anonymous' }, retry: false }
    // Only a nonce salt read from a cached option could be behind WordPress.
    const saltReads: Reads = { fresh: reads.fresh, servedFromCache: false }
    const nonceSalt = await salt('nonce', saltReads)
    const valid = nonceSalt !== null && verifyNonce(request.nonce, {
      action: NONCE_ACTION, userId: cookie.userId, token: cookie.token, nowSeconds: nowSeconds(), salt: nonceSalt, nonceLifeSeconds: nonceLife,
    }) !== 0
    if (!valid) return { result: { kind: 'invalid_nonce' }, retry: saltReads.servedFromCache }
    return { result: await authenticatedUser(cookie.userId, cookie.login, 'cookie', reads), retry: false }
  }

  async function pageCookieAttempt(value: string, method: string, reads: Reads): Promise<Attempt<PageCookieResult>> {
    const cookie = await validateCookie(value, method, reads)
    if (!cookie.ok) return { result: { kind: 'none', reason: cookie.reason }, retry: reads.servedFromCache && REFUSALS_ROWS_CAN_CHANGE.has(cookie.reason) }
    const nonceSalt = await salt('nonce', reads)
    // Without a nonce salt WordPress would make one up and store it; no nonce could be checked.
    if (nonceSalt === null) return { result: { kind: 'none', reason: 'no_salt' }, retry: reads.servedFromCache }
    // wp_create_nonce('wp_rest') for this user and this session, as wp-admin embeds it.
    const nonce = createNonce({ action: NONCE_ACTION, userId: cookie.userId, token: cookie.token, nowSeconds: nowSeconds(), salt: nonceSalt, nonceLifeSeconds: nonceLife })
    return { result: { kind: 'page', user: await authenticatedUser(cookie.userId, cookie.login, 'cookie', reads), nonce }, retry: false }
  }

  const appPasswords = createApplicationPasswordAuthenticator({
    store: options.store,
    clock,
    findUserByLogin: async (login, reads) => {
      const row = await userByLogin(login, reads)
      return row && { id: row.ID, login: row.user_login }
    },
    findUserByEmail: async (email, reads) => {
      const row = await userByEmail(email, reads)
      return row && { id: row.ID, login: row.user_login }
    },
    applicationPasswords: async (userId) => unserializeMeta(await repo.getUserMeta(db, userId, '_application_passwords')),
    maxFailures: options.throttle?.maxFailures,
    failureWindowMs: options.throttle?.windowMs,
    verifiedCacheMs: options.verifiedPasswordCacheMs,
  })

  function clearCaches(): void {
    cache.clear()
    multisite = undefined
    appPasswords.clear()
  }

  return {
    async authenticateCookie(request) {
      const value = await loggedInCookie(request.cookieHeader)
      if (value === undefined) return { kind: 'none', reason: 'no_cookie' }
      return cachedThenFresh((reads) => restCookieAttempt(value, request, reads))
    },

    async authenticatePageCookie(request) {
      const value = await loggedInCookie(request.cookieHeader)
      if (value === undefined) return { kind: 'none', reason: 'no_cookie' }
      return cachedThenFresh((reads) => pageCookieAttempt(value, request.method, reads))
    },

    async authenticateBasic(request) {
      const result = await appPasswords.authenticate(request.authorizationHeader, request.clientIp)
      if (result.kind !== 'user') return result
      return authenticatedUser(result.userId, result.login, 'application_password', cachedReads())
    },

    tokenUser: (userId) => tokenUser(userId, cachedReads()),

    loggedInCookieName: cookieName,

    reloadSettings(next) {
      settings = { ...next }
      clearCaches()
    },

    clearCaches,
  }
}
