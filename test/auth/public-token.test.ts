/**
 * The HS256 check of signed public tokens (SPEC §5): tokens made by a JOSE library and by the
 * companion plugin's PHP verify; anything else is refused.
 */
import { createHmac, createSecretKey } from 'node:crypto'
import { SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { verifyHs256, verifyPublicToken } from '../../src/auth/public-token.js'

const SECRET = 'public-token-secret-for-these-tests-0123'
const KEY = createSecretKey(Buffer.from(SECRET, 'utf8'))
const NOW = 1_800_000_000_000
const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
const sign = (header: unknown, payload: unknown, secret = SECRET) => {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}
const claims = { sub: '5', iat: NOW / 1000, exp: NOW / 1000 + 600 }

describe('verifyHs256', () => {
  it('accepts a token signed by jose, and the same claims signed by hand', async () => {
    const jose = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(SECRET))
    expect(verifyHs256(jose, KEY)).toEqual({ ok: true, payload: claims })
    expect(verifyHs256(sign({ alg: 'HS256' }, claims), KEY)).toEqual({ ok: true, payload: claims })
    const r = await verifyPublicToken(jose, KEY, NOW)
    expect(r).toMatchObject({ ok: true, principal: { userId: 5, ownerKey: 'u:5', isAdmin: false } })
  })

  it.each([
    ['another secret', () => sign({ alg: 'HS256' }, claims, 'another-secret-another-secret-0123')],
    ['alg none', () => `${b64({ alg: 'none' })}.${b64(claims)}.`],
    ['HS384', () => sign({ alg: 'HS384' }, claims)],
    ['RS256 named with an HMAC signature', () => sign({ alg: 'RS256' }, claims)],
    ['a crit header', () => sign({ alg: 'HS256', crit: ['exp'] }, claims)],
    ['an unencoded payload (b64: false)', () => sign({ alg: 'HS256', b64: false }, claims)],
    ['a tampered payload', () => { const [h, , s] = sign({ alg: 'HS256' }, claims).split('.'); return `${h}.${b64({ ...claims, sub: '1' })}.${s}` }],
    ['a truncated signature', () => sign({ alg: 'HS256' }, claims).slice(0, -4)],
    ['characters outside base64url', () => `${sign({ alg: 'HS256' }, claims)}==`],
    ['two parts', () => sign({ alg: 'HS256' }, claims).split('.').slice(0, 2).join('.')],
    ['four parts', () => `${sign({ alg: 'HS256' }, claims)}.x`],
    ['a header that is not JSON', () => { const input = `${b64('not json')}.${b64(claims)}`; return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}` }],
    ['a payload that is an array', () => sign({ alg: 'HS256' }, [1, 2])],
    ['an empty string', () => ''],
  ])('refuses %s', (_name, token) => {
    const result = verifyHs256(token(), KEY)
    expect(result.ok).toBe(false)
  })
})
