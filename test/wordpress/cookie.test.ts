import { describe, expect, it } from 'vitest'
import {
  cookieHashFor, generateLoggedInCookie, passFrag, phpRawUrlDecode, readCookie, sessionIsLive, sessionVerifier,
  validateLoggedInCookie, type CookieUser, type CookieValidationDeps,
} from '../../src/wordpress/cookie.js'
import { createNonce, nonceTick, verifyNonce } from '../../src/wordpress/nonce.js'
import { maybeUnserialize } from '../../src/wordpress/php-unserialize.js'
import { authVectors as v } from '../support/wordpress-fixtures.js'

const SALT = 'logged-in-salt'
const NOW = 1_800_000_000
const user: CookieUser = { id: 7, login: 'erin', passwordHash: '$P$BIV6qG9ri8Q/pTHCdi5dNJJ53q8u4x1' }
const token = 'tok-erin'

function deps(overrides: Partial<CookieValidationDeps> = {}): CookieValidationDeps {
  return {
    nowSeconds: NOW,
    withGrace: false,
    loggedInSalt: async () => SALT,
    findUserByLogin: async (login) => (login === user.login ? user : undefined),
    sessionTokens: async () => maybeUnserialize(`a:1:{s:64:"${sessionVerifier(token)}";a:1:{s:10:"expiration";i:${NOW + 60};}}`),
    ...overrides,
  }
}

describe('cookie name and header', () => {
  it('derives COOKIEHASH from the siteurl', () => {
    expect(cookieHashFor(v.siteurl)).toBe(v.cookiehash)
    expect(cookieHashFor('')).toBe('')
  })

  it('reads the value like PHP: raw URL decoding, first cookie wins, names mangled', () => {
    expect(readCookie('a=1; wordpress_logged_in_x=u%7C1%7Ct%7Ch; wordpress_logged_in_x=other', 'wordpress_logged_in_x')).toBe('u|1|t|h')
    expect(readCookie('wordpress logged.in_x=v', 'wordpress_logged_in_x')).toBe('v')
    expect(readCookie('a=1', 'wordpress_logged_in_x')).toBeUndefined()
    expect(readCookie('wordpress_logged_in_x[0]=v', 'wordpress_logged_in_x')).toBeUndefined()
    expect(phpRawUrlDecode('a+b%20c%zz%4')).toBe('a+b c%zz%4')
    expect(phpRawUrlDecode('%C3%A9')).toBe('é')
  })
})

describe('validateLoggedInCookie', () => {
  it('accepts a cookie it generated and refuses it under another salt', async () => {
    const cookie = generateLoggedInCookie(user, NOW + 100, token, SALT)
    expect(await validateLoggedInCookie(cookie, deps())).toEqual({ ok: true, userId: 7, login: 'erin', token })
    expect(await validateLoggedInCookie(cookie, deps({ loggedInSalt: async () => 'other' }))).toEqual({ ok: false, reason: 'bad_hmac' })
    expect(await validateLoggedInCookie(cookie, deps({ loggedInSalt: async () => null }))).toEqual({ ok: false, reason: 'no_salt' })
  })

  it('logs the cookie out when the password (its pass_frag) changes', async () => {
    const cookie = generateLoggedInCookie(user, NOW + 100, token, SALT)
    const changed = { ...user, passwordHash: '$P$BXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX' }
    expect(await validateLoggedInCookie(cookie, deps({ findUserByLogin: async () => changed }))).toEqual({ ok: false, reason: 'bad_hmac' })
  })

  it('gives POST requests an hour of grace after expiry, and GET none', async () => {
    const cookie = generateLoggedInCookie(user, NOW - 60, token, SALT)
    expect(await validateLoggedInCookie(cookie, deps())).toEqual({ ok: false, reason: 'expired' })
    expect(await validateLoggedInCookie(cookie, deps({ withGrace: true }))).toMatchObject({ ok: true })
    const older = generateLoggedInCookie(user, NOW - 3601, token, SALT)
    expect(await validateLoggedInCookie(older, deps({ withGrace: true }))).toEqual({ ok: false, reason: 'expired' })
  })

  it('refuses malformed cookies and unknown users', async () => {
    const cookie = generateLoggedInCookie(user, NOW + 100, token, SALT)
    expect(await validateLoggedInCookie(`${cookie}|extra`, deps())).toEqual({ ok: false, reason: 'malformed' })
    expect(await validateLoggedInCookie('erin|soon|t|h', deps())).toEqual({ ok: false, reason: 'malformed' })
    expect(await validateLoggedInCookie(cookie.replace('erin', 'frank'), deps())).toEqual({ ok: false, reason: 'unknown_user' })
  })

  it('requires a live session for the token', async () => {
    const cookie = generateLoggedInCookie(user, NOW + 100, token, SALT)
    const expired = maybeUnserialize(`a:1:{s:64:"${sessionVerifier(token)}";a:1:{s:10:"expiration";i:${NOW - 1};}}`)
    expect(await validateLoggedInCookie(cookie, deps({ sessionTokens: async () => expired }))).toEqual({ ok: false, reason: 'no_session' })
    expect(await validateLoggedInCookie(cookie, deps({ sessionTokens: async () => undefined }))).toEqual({ ok: false, reason: 'no_session' })
  })

  it('accepts the bare-integer sessions of old WordPress', () => {
    expect(sessionIsLive(maybeUnserialize(`a:1:{s:64:"${sessionVerifier(token)}";i:${NOW};}`), token, NOW)).toBe(true)
    expect(sessionIsLive(maybeUnserialize(`a:1:{s:64:"${sessionVerifier(token)}";i:${NOW - 1};}`), token, NOW)).toBe(false)
  })

  it('takes pass_frag from characters 8-11 of $P$ and $2y$ hashes, the last 4 otherwise', () => {
    expect(passFrag('$P$BIV6qG9ri8Q/pTHCdi5dNJJ53q8u4x1')).toBe('G9ri')
    expect(passFrag('$2y$10$8QmCI/6gmEdadE9uk.5Tl.uK9vpmvR27nVkISYAghk8K72IU7L1TW')).toBe('QmCI')
    expect(passFrag('$wp$2y$10$NPKu1yKXC1giIrle4Zj3l.OuQQvznpZytmXBZ7x2bM76vYve4Ir6q')).toBe('Ir6q')
  })
})

describe('nonces', () => {
  const ctx = { action: 'wp_rest', userId: 7, token, salt: 'nonce-salt', nonceLifeSeconds: 86_400 }

  it('uses the tick WordPress recorded', () => {
    expect(nonceTick(v.cases[0]!.now, v.nonce_life)).toBe(41573)
  })

  it('is valid for the tick it was made in (1) and the next (2), then not', () => {
    const nonce = createNonce({ ...ctx, nowSeconds: NOW })
    expect(nonce).toMatch(/^[0-9a-f]{10}$/)
    expect(verifyNonce(nonce, { ...ctx, nowSeconds: NOW })).toBe(1)
    expect(verifyNonce(nonce, { ...ctx, nowSeconds: NOW + 43_200 })).toBe(2)
    expect(verifyNonce(nonce, { ...ctx, nowSeconds: NOW + 86_400 })).toBe(0)
  })

  it('is bound to the user, the session and the action', () => {
    const nonce = createNonce({ ...ctx, nowSeconds: NOW })
    expect(verifyNonce(nonce, { ...ctx, userId: 8, nowSeconds: NOW })).toBe(0)
    expect(verifyNonce(nonce, { ...ctx, token: 'other', nowSeconds: NOW })).toBe(0)
    expect(verifyNonce(nonce, { ...ctx, action: 'other', nowSeconds: NOW })).toBe(0)
    expect(verifyNonce('', { ...ctx, nowSeconds: NOW })).toBe(0)
  })
})
