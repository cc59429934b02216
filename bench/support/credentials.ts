/**
 * Credentials the way WordPress issues them, built here from their published formulas so the bench
 * depends on no gateway module: the signed public token (HS256 JWT, SPEC §5) and the logged-in
 * cookie of the WordPress fixtures with a REST nonce for the current tick (wp_create_nonce()).
 */
import { createHmac } from 'node:crypto'
import { readFileSync } from 'node:fs'

export interface WordPressFixtures {
  salts: Record<string, string>
  cookiehash: string
  logged_in_cookie_name: string
  nonce_life: number
  cases: { user: string; cookie: string; expect_user_id: number }[]
}

export function readWordPressFixtures(): WordPressFixtures {
  return JSON.parse(readFileSync(new URL('../../test/fixtures/wordpress/auth-vectors.json', import.meta.url), 'utf8')) as WordPressFixtures
}

const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url')

/** An HS256 public token: `sub` (and `sid` for a visitor), `iat`, `exp` one hour later. */
export function publicToken(secret: string, claims: { sub: number; sid?: string }): string {
  const iat = Math.floor(Date.now() / 1000)
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))
  const payload = b64url(JSON.stringify({ sub: String(claims.sub), ...(claims.sid ? { sid: claims.sid } : {}), iat, exp: iat + 3600 }))
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url')
  return `${header}.${payload}.${signature}`
}

/**
 * wp_create_nonce('wp_rest') for a user and session: characters -12..-3 of
 * hash_hmac('md5', "tick|action|uid|token", NONCE_KEY . NONCE_SALT), tick = ceil(time / (life / 2)).
 */
export function restNonce(fixtures: WordPressFixtures, userId: number, sessionToken: string): string {
  const tick = Math.ceil(Date.now() / 1000 / (fixtures.nonce_life / 2))
  const salt = fixtures.salts.NONCE_KEY! + fixtures.salts.NONCE_SALT!
  return createHmac('md5', salt).update(`${tick}|wp_rest|${userId}|${sessionToken}`).digest('hex').slice(-12, -2)
}

/** Cookie + nonce headers of the fixture user `login` (a valid, unexpired session). */
export function cookieHeaders(fixtures: WordPressFixtures, login: string): Record<string, string> {
  const c = fixtures.cases.find((x) => x.user === login && x.expect_user_id > 0)
  if (!c) throw new Error(`no valid cookie for ${login} in the WordPress fixtures`)
  const sessionToken = c.cookie.split('|')[2]!
  return {
    // WordPress's setcookie() URL-encodes the value, so `|` travels as %7C.
    cookie: `${fixtures.logged_in_cookie_name}=${encodeURIComponent(c.cookie)}`,
    'x-wp-nonce': restNonce(fixtures, c.expect_user_id, sessionToken),
  }
}
