/**
 * The `wordpress_logged_in_{COOKIEHASH}` cookie, read and checked as PHP and
 * wp_validate_auth_cookie($cookie, 'logged_in') do (wp-includes/pluggable.php, WordPress 6.8).
 */
import { createHash, createHmac } from 'node:crypto'
import { constantTimeEqual } from './phpass.js'
import { isPhpArray, phpArrayGet, type PhpValue } from './php-unserialize.js'

export const LOGGED_IN_COOKIE_PREFIX = 'wordpress_logged_in_'
// wp_validate_auth_cookie() adds HOUR_IN_SECONDS for POST and Ajax requests, so a form sent just
// after the cookie's expiry still goes through.
const POST_GRACE_SECONDS = 3600

/** COOKIEHASH as wp_cookie_constants() defines it: md5 of the siteurl, or "" when there is none. */
export function cookieHashFor(siteurl: string | undefined | null): string {
  return siteurl ? createHash('md5').update(siteurl, 'utf8').digest('hex') : ''
}

export function loggedInCookieName(cookieHash: string): string {
  return LOGGED_IN_COOKIE_PREFIX + cookieHash
}

/**
 * PHP's php_raw_url_decode(), which it uses for cookie values: `%XX` becomes the byte, a `%` not
 * followed by two hex digits stays, and `+` stays `+` (unlike urldecode()).
 */
export function phpRawUrlDecode(text: string): string {
  if (!text.includes('%')) return text
  const input = Buffer.from(text, 'utf8')
  const out = Buffer.alloc(input.length)
  let n = 0
  for (let i = 0; i < input.length; i++) {
    const hex = input[i] === 0x25 && i + 2 < input.length ? input.toString('latin1', i + 1, i + 3) : ''
    if (/^[0-9a-fA-F]{2}$/.test(hex)) {
      out[n++] = parseInt(hex, 16)
      i += 2
    } else {
      out[n++] = input[i]!
    }
  }
  return out.toString('utf8', 0, n)
}

/**
 * The value PHP would put in `$_COOKIE[name]`: pairs split on `;`, leading whitespace dropped
 * from names, spaces and dots in names turned into `_` (PHP's variable-name mangling), values
 * raw-URL-decoded, and the *first* cookie of a name kept (PHP never overwrites a cookie).
 */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=')
    const rawName = (eq < 0 ? pair : pair.slice(0, eq)).replace(/^[ \t\n\v\f\r]+/, '')
    // A name with "[" becomes an array in $_COOKIE, which WordPress cannot validate.
    if (rawName === '' || rawName.includes('[')) continue
    if (rawName.replace(/[ .]/g, '_') !== name) continue
    return eq < 0 ? '' : phpRawUrlDecode(pair.slice(eq + 1))
  }
  return undefined
}

export interface AuthCookieFields {
  username: string
  expiration: string
  token: string
  hmac: string
}

/** wp_parse_auth_cookie(): exactly four `|`-separated fields. */
export function parseAuthCookie(value: string): AuthCookieFields | undefined {
  if (value === '') return undefined
  const parts = value.split('|')
  if (parts.length !== 4) return undefined
  const [username, expiration, token, hmac] = parts as [string, string, string, string]
  return { username, expiration, token, hmac }
}

/**
 * The 4 characters of the password hash bound into the cookie key, so changing the password
 * logs every session out. WordPress 6.8 keeps characters 8–11 for phpass and plain bcrypt and
 * takes the last 4 for everything else (its `$wp$2y$…` hashes have a longer prefix).
 */
export function passFrag(userPass: string): string {
  if (userPass.startsWith('$P$') || userPass.startsWith('$2y$')) return userPass.slice(8, 12)
  return userPass.slice(-4)
}

export interface CookieHmacInput {
  username: string
  expiration: string
  token: string
  passFrag: string
  /** wp_salt('logged_in'). */
  salt: string
}

/** The cookie's HMAC: hmac_sha256(wp_hash(login|frag|exp|token, 'logged_in'), login|exp|token). */
export function authCookieHmac(input: CookieHmacInput): string {
  const key = createHmac('md5', input.salt)
    .update(`${input.username}|${input.passFrag}|${input.expiration}|${input.token}`, 'utf8').digest('hex')
  return createHmac('sha256', key).update(`${input.username}|${input.expiration}|${input.token}`, 'utf8').digest('hex')
}

/** wp_generate_auth_cookie() for the logged_in scheme (for tests and tools). */
export function generateLoggedInCookie(user: { login: string; passwordHash: string }, expiration: number, token: string, salt: string): string {
  const fields = { username: user.login, expiration: String(expiration), token }
  const hmac = authCookieHmac({ ...fields, passFrag: passFrag(user.passwordHash), salt })
  return `${user.login}|${expiration}|${token}|${hmac}`
}

/** The SHA-256 verifier under which WP_Session_Tokens stores a session. */
export function sessionVerifier(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

/**
 * WP_User_Meta_Session_Tokens::verify(): the `session_tokens` meta (already unserialized) holds
 * the token's verifier with `expiration >= now`. Very old WordPress stored a bare expiry integer
 * instead of an array (prepare_session() still accepts it).
 */
export function sessionIsLive(sessions: PhpValue | undefined, token: string, nowSeconds: number): boolean {
  if (!isPhpArray(sessions)) return false
  const session = phpArrayGet(sessions, sessionVerifier(token))
  const expiration = isPhpArray(session) ? phpArrayGet(session, 'expiration') : session
  if (typeof expiration === 'number') return expiration >= nowSeconds
  if (typeof expiration === 'bigint') return expiration >= BigInt(nowSeconds)
  // PHP compares a numeric string as a number; anything else cannot be a live session.
  if (typeof expiration === 'string' && /^\s*[+-]?[0-9]+(\.[0-9]+)?\s*$/.test(expiration)) return Number(expiration) >= nowSeconds
  return false
}

export interface CookieUser {
  id: number
  login: string
  /** `user_pass`, only used for its pass_frag. */
  passwordHash: string
}

export interface CookieValidationDeps {
  nowSeconds: number
  /** True for POST (and Ajax) requests, which get an hour's grace after expiry. */
  withGrace: boolean
  /** wp_salt('logged_in'), or null when WordPress has none yet. */
  loggedInSalt(): Promise<string | null>
  findUserByLogin(login: string): Promise<CookieUser | undefined>
  /** The user's `session_tokens` meta, unserialized. */
  sessionTokens(userId: number): Promise<PhpValue | undefined>
}

export type CookieRefusal = 'malformed' | 'expired' | 'unknown_user' | 'no_salt' | 'bad_hmac' | 'no_session'

export type CookieValidation =
  | { ok: true; userId: number; login: string; token: string }
  | { ok: false; reason: CookieRefusal }

/**
 * wp_validate_auth_cookie($value, 'logged_in') on the decoded cookie value: the user id, or why
 * it is refused. The order of checks is WordPress's, so the cheap ones come first.
 */
export async function validateLoggedInCookie(value: string, deps: CookieValidationDeps): Promise<CookieValidation> {
  const fields = parseAuthCookie(value)
  // WordPress compares the expiration as a number; a cookie it issued always carries digits, and
  // the HMAC covers the exact text, so refusing anything else loses no valid cookie.
  if (!fields || !/^[0-9]+$/.test(fields.expiration)) return { ok: false, reason: 'malformed' }
  const expiresAt = Number(fields.expiration) + (deps.withGrace ? POST_GRACE_SECONDS : 0)
  if (expiresAt < deps.nowSeconds) return { ok: false, reason: 'expired' }

  const user = await deps.findUserByLogin(fields.username)
  if (!user) return { ok: false, reason: 'unknown_user' }
  const salt = await deps.loggedInSalt()
  if (salt === null) return { ok: false, reason: 'no_salt' }

  const expected = authCookieHmac({ ...fields, passFrag: passFrag(user.passwordHash), salt })
  if (!constantTimeEqual(expected, fields.hmac)) return { ok: false, reason: 'bad_hmac' }
  if (!sessionIsLive(await deps.sessionTokens(user.id), fields.token, deps.nowSeconds)) return { ok: false, reason: 'no_session' }
  return { ok: true, userId: user.id, login: user.login, token: fields.token }
}
