import type { KeyObject } from 'node:crypto'
import { ApiError } from '../errors.js'
import type { Principal } from './principal.js'
import { verifyPublicToken } from './public-token.js'

/** The WordPress side of authentication (cookie + nonce, application passwords, token users). */
export interface WordPressAuthenticator {
  /** Undefined when the request carries no logged-in cookie at all. */
  cookie(input: { method: string; cookieHeader: string; nonce: string | undefined }): Promise<
    | { kind: 'user'; principal: Principal }
    | { kind: 'anonymous' }
    | { kind: 'invalid_nonce' }
    | { kind: 'none' }
  >
  /** The cookie alone, for the admin page load; with a fresh `wp_rest` nonce for the page. */
  pageCookie(input: { method: string; cookieHeader: string }): Promise<
    | { kind: 'user'; principal: Principal; login: string; nonce: string }
    | { kind: 'none' }
  >
  basic(input: { authorization: string; clientIp: string }): Promise<
    | { kind: 'user'; principal: Principal }
    | { kind: 'invalid' }
    | { kind: 'throttled'; retryAfterSeconds: number }
  >
  /** A verified token of a WordPress user (sub > 0), held to AI_CREATE_CAPABILITY like the user's cookie. */
  token(principal: Principal): Promise<Principal>
}

/** Where the chain finds WordPress's checks, which exist only once WordPress's tables do. */
export interface WordPressSource {
  /** The checks, once WordPress's user tables were found. */
  readonly current: WordPressAuthenticator | undefined
  /** While they were not found: looks again (at most every so often), for a request that needs them. */
  detect(): Promise<WordPressAuthenticator | undefined>
}

export interface AuthRequest {
  method: string
  headers: Record<string, string | string[] | undefined>
  query: unknown
  ip: string
}

export interface AuthDeps {
  /** A KeyObject, so the HMAC key is imported once rather than on every request. */
  publicTokenSecret: Uint8Array | KeyObject | undefined
  wordpress: WordPressSource
  now: () => number
}

/** The admin page's own nonce and user, for the page to embed (SPEC §4 `GET /admin`). */
export interface AdminPageSession {
  /** wp_create_nonce('wp_rest') for this user and this login session. */
  nonce: string
  userId: number
  login: string
}

function header(req: AuthRequest, name: string): string | undefined {
  const v = req.headers[name]
  return Array.isArray(v) ? v[0] : v
}

function unauthorized(message = 'Authentication is required: a WordPress login with its REST nonce, an application password, or a signed token.'): ApiError {
  return new ApiError('ai_unauthorized', message)
}

// A logged-in cookie of any COOKIEHASH (PHP reads dots and spaces in cookie names as `_`): enough
// to know the request needs WordPress before its tables, and so the cookie's name, are known.
const WORDPRESS_LOGGED_IN_COOKIE = /(?:^|;)[ \t]*wordpress[ ._]logged[ ._]in[ ._]/

/** The checks when they exist; otherwise, for a request that needs them, a look for the tables. */
async function wordpressFor(deps: AuthDeps, needed: boolean): Promise<WordPressAuthenticator | undefined> {
  return deps.wordpress.current ?? (needed ? deps.wordpress.detect() : undefined)
}

/**
 * Finds who the request acts for (SPEC §5): the WordPress cookie with its nonce, then an
 * application password, then a signed public token. A valid cookie without a nonce makes the
 * request anonymous and ends the search, as in WordPress; anonymous requests get 401 here.
 */
export async function authenticate(req: AuthRequest, deps: AuthDeps): Promise<Principal> {
  const cookieHeader = header(req, 'cookie')
  const cookieAuth = cookieHeader ? await wordpressFor(deps, WORDPRESS_LOGGED_IN_COOKIE.test(cookieHeader)) : undefined
  if (cookieAuth && cookieHeader) {
    const query = (req.query ?? {}) as Record<string, unknown>
    // WordPress reads `_wpnonce` first, then the X-WP-Nonce header (rest_cookie_check_errors).
    const nonce = typeof query._wpnonce === 'string' ? query._wpnonce : header(req, 'x-wp-nonce')
    const result = await cookieAuth.cookie({ method: req.method, cookieHeader, nonce })
    if (result.kind === 'user') return result.principal
    if (result.kind === 'invalid_nonce') throw new ApiError('rest_cookie_invalid_nonce', 'Cookie check failed')
    if (result.kind === 'anonymous') throw unauthorized('A WordPress login cookie needs its REST nonce (X-WP-Nonce header or _wpnonce parameter).')
  }

  const authorization = header(req, 'authorization')
  if (!authorization) throw unauthorized()
  const [scheme = '', value = ''] = authorization.trim().split(/\s+/, 2)

  if (scheme.toLowerCase() === 'basic') {
    const wordpress = await wordpressFor(deps, true)
    if (!wordpress) throw unauthorized('Application passwords are not available: no WordPress database is configured.')
    const result = await wordpress.basic({ authorization, clientIp: req.ip })
    if (result.kind === 'user') return result.principal
    if (result.kind === 'throttled') {
      throw new ApiError('ai_too_many_auth_failures', 'Too many failed logins; try again later.', { headers: { 'Retry-After': String(result.retryAfterSeconds) } })
    }
    throw unauthorized('The application password is not valid.')
  }

  if (scheme.toLowerCase() === 'bearer') {
    if (!deps.publicTokenSecret) throw unauthorized('Signed tokens are not accepted: AI_PUBLIC_TOKEN_SECRET is not set.')
    const result = await verifyPublicToken(value, deps.publicTokenSecret, deps.now())
    if (!result.ok) throw unauthorized(`The token is not valid: ${result.reason}.`)
    // A visitor (sub 0) has no WordPress user to hold to a capability; a user's token is held
    // to AI_CREATE_CAPABILITY wherever WordPress's tables are present (SPEC §5).
    if (result.principal.userId === 0) return result.principal
    const wordpress = await wordpressFor(deps, true)
    return wordpress ? wordpress.token(result.principal) : result.principal
  }

  throw unauthorized()
}

/**
 * The admin page load (SPEC §4 `GET /admin`, §5): the WordPress logged-in cookie alone, as
 * opening wp-admin, and no other credential (a token or an application password cannot open
 * the page). Answers the cookie's user and a fresh `wp_rest` nonce for the page's own calls;
 * throws 401 without a valid cookie. The capability is the caller's to check.
 */
export async function authenticateAdminPage(req: AuthRequest, deps: AuthDeps): Promise<{ principal: Principal; page: AdminPageSession }> {
  const cookieHeader = header(req, 'cookie')
  const wordpress = cookieHeader ? await wordpressFor(deps, WORDPRESS_LOGGED_IN_COOKIE.test(cookieHeader)) : undefined
  if (!wordpress || !cookieHeader) throw unauthorized('The admin page needs a WordPress login: log in to WordPress first.')
  const result = await wordpress.pageCookie({ method: req.method, cookieHeader })
  if (result.kind !== 'user') throw unauthorized('The admin page needs a WordPress login: log in to WordPress first.')
  return { principal: result.principal, page: { nonce: result.nonce, userId: result.principal.userId, login: result.login } }
}
