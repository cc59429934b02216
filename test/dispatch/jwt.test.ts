import { generateKeyPairSync } from 'node:crypto'
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, jwtVerify, SignJWT } from 'jose'
import { describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { bodySha256, buildJwks, generateDevSigningKey, loadSigningKey, signDispatchJwt, type DispatchSigningKey } from '../../src/dispatch/jwt.js'
import { createDispatchVerifier } from '../../src/dispatch/verify-dispatch.js'

const NOW_MS = 1_760_000_000_123
const AUD = 'https://worker.example.test/jobs'
const JTI = 'a'.repeat(64)

function pem(type: 'ec' | 'rsa', curve = 'P-256'): { privatePem: string; publicPem: string } {
  const pair =
    type === 'ec'
      ? generateKeyPairSync('ec', { namedCurve: curve })
      : generateKeyPairSync('rsa', { modulusLength: 2048 })
  return {
    privatePem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  }
}

const ec = pem('ec')
const rsa = pem('rsa')
const body = Buffer.from(JSON.stringify({ job_id: 1, idempotency_key: JTI, attempt: 1, request: { input: 'hi' } }))

async function sign(key: DispatchSigningKey, overrides: Partial<Parameters<typeof signDispatchJwt>[1]> = {}): Promise<string> {
  return signDispatchJwt(key, { sub: 42, jti: JTI, aud: AUD, bodySha256: bodySha256(body), nowMs: NOW_MS, ...overrides })
}

describe('loadSigningKey and signDispatchJwt', () => {
  it.each([
    ['ES256', ec.privatePem],
    ['RS256', rsa.privatePem],
  ])('signs %s tokens that verify against buildJwks with exact claims', async (alg, privateKeyPem) => {
    const key = loadSigningKey({ privateKeyPem, kid: 'k-2025' })
    expect(key.alg).toBe(alg)
    const jwks = buildJwks(key)
    expect(jwks.keys).toHaveLength(1)
    expect(jwks.keys[0]).toMatchObject({ kid: 'k-2025', alg, use: 'sig' })
    expect(jwks.keys[0]).not.toHaveProperty('d')

    const token = await sign(key)
    expect(decodeProtectedHeader(token)).toEqual({ alg, kid: 'k-2025', typ: 'JWT' })
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { audience: AUD, currentDate: new Date(NOW_MS), algorithms: [alg] })
    const iat = Math.floor(NOW_MS / 1000)
    expect(payload).toEqual({ iat, exp: iat + 60, sub: '42', jti: JTI, aud: AUD, body_sha256: bodySha256(body) })
  })

  it('signs shorter lifetimes and refuses more than 60 s', async () => {
    const key = loadSigningKey({ privateKeyPem: ec.privatePem })
    const { payload } = await jwtVerify(await sign(key, { ttlSeconds: 30 }), createLocalJWKSet(buildJwks(key)), { currentDate: new Date(NOW_MS) })
    expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(30)
    await expect(sign(key, { ttlSeconds: 61 })).rejects.toThrow(/1–60/)
  })

  it('derives the kid from the RFC 7638 thumbprint when none is given', async () => {
    const key = loadSigningKey({ privateKeyPem: ec.privatePem })
    expect(key.kid).toBe(await calculateJwkThumbprint(key.publicJwk))
    const dev = generateDevSigningKey()
    expect(dev.alg).toBe('ES256')
    expect(dev.kid).toBe(await calculateJwkThumbprint(dev.publicJwk))
    expect(dev.kid).not.toBe(key.kid)
  })

  it('accepts a PEM whose newlines were written as \\n in an env file', () => {
    const oneLine = ec.privatePem.trim().replace(/\n/g, '\\n')
    expect(loadSigningKey({ privateKeyPem: oneLine, kid: 'x' }).publicJwk).toEqual(loadSigningKey({ privateKeyPem: ec.privatePem, kid: 'x' }).publicJwk)
  })

  it('publishes the previous public key during a rotation, and tokens of both verify', async () => {
    const oldKey = loadSigningKey({ privateKeyPem: rsa.privatePem, kid: 'old' })
    const key = loadSigningKey({ privateKeyPem: ec.privatePem, kid: 'new', previousPublicKeyPem: rsa.publicPem, previousKid: 'old' })
    const jwks = buildJwks(key)
    expect(jwks.keys.map((k) => [k.kid, k.alg, k.use])).toEqual([
      ['new', 'ES256', 'sig'],
      ['old', 'RS256', 'sig'],
    ])
    const keySet = createLocalJWKSet(jwks)
    for (const signer of [key, oldKey]) {
      const { protectedHeader } = await jwtVerify(await sign(signer), keySet, { audience: AUD, currentDate: new Date(NOW_MS) })
      expect(protectedHeader.kid).toBe(signer.kid)
    }
  })

  it('refuses a P-384 key, naming AI_JWT_PRIVATE_KEY', () => {
    expect(() => loadSigningKey({ privateKeyPem: pem('ec', 'P-384').privatePem })).toThrow(/AI_JWT_PRIVATE_KEY .*secp384r1.*P-256/)
  })

  it.each([
    ['an Ed25519 key', generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), /AI_JWT_PRIVATE_KEY is a ed25519 key/],
    ['a 1024-bit RSA key', generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), /AI_JWT_PRIVATE_KEY is a 1024-bit RSA key/],
    ['garbage', '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----', /AI_JWT_PRIVATE_KEY is not a readable/],
    ['nothing', undefined, /AI_JWT_PRIVATE_KEY is not set/],
  ])('refuses %s', (_label, privateKeyPem, message) => {
    expect(() => loadSigningKey({ privateKeyPem })).toThrow(message)
  })

  it('refuses a previous key that is unsupported or shares the current kid', () => {
    expect(() => loadSigningKey({ privateKeyPem: ec.privatePem, previousPublicKeyPem: pem('ec', 'P-384').publicPem })).toThrow(/AI_JWT_PREVIOUS_PUBLIC_KEY/)
    expect(() => loadSigningKey({ privateKeyPem: ec.privatePem, kid: 'same', previousPublicKeyPem: rsa.publicPem, previousKid: 'same' })).toThrow(/AI_JWT_PREVIOUS_KID must differ/)
  })
})

describe('createDispatchVerifier', () => {
  const key = loadSigningKey({ privateKeyPem: ec.privatePem, kid: 'k1' })

  function verifier(clock = manualClock(NOW_MS)) {
    return createDispatchVerifier({ jwks: buildJwks(key), audience: AUD, clock })
  }

  it('accepts a good token and returns its claims', async () => {
    const result = await verifier().verify(`Bearer ${await sign(key)}`, body)
    expect(result).toEqual({ ok: true, kid: 'k1', alg: 'ES256', claims: expect.objectContaining({ sub: '42', jti: JTI, aud: AUD, body_sha256: bodySha256(body) }) })
  })

  it('refuses a wrong audience', async () => {
    const result = await verifier().verify(`Bearer ${await sign(key, { aud: 'https://elsewhere.test/jobs' })}`, body)
    expect(result).toMatchObject({ ok: false, reason: expect.stringMatching(/aud/) })
  })

  it('refuses an expired token', async () => {
    const clock = manualClock(NOW_MS)
    const v = verifier(clock)
    const token = await sign(key)
    clock.advance(66_000) // past exp (60 s) and the 5 s tolerance
    expect(await v.verify(`Bearer ${token}`, body)).toMatchObject({ ok: false, reason: expect.stringMatching(/exp/) })
  })

  it('refuses a body changed after signing', async () => {
    const changed = Buffer.from(body.toString().replace('"hi"', '"ho"'))
    expect(await verifier().verify(`Bearer ${await sign(key)}`, changed)).toEqual({ ok: false, reason: 'body_sha256 does not match the body' })
  })

  it('refuses a replayed token, but accepts the next attempt and a freshly signed re-send', async () => {
    const clock = manualClock(NOW_MS)
    const v = verifier(clock)
    const token = await sign(key)
    expect((await v.verify(`Bearer ${token}`, body)).ok).toBe(true)
    expect(await v.verify(`Bearer ${token}`, body)).toEqual({ ok: false, reason: 'token replayed' })

    // A redispatch reuses jti with attempt + 1: another body, so not a replay.
    const next = Buffer.from(body.toString().replace('"attempt":1', '"attempt":2'))
    expect((await v.verify(`Bearer ${await sign(key, { bodySha256: bodySha256(next) })}`, next)).ok).toBe(true)
    // The gateway re-sending the same body after a failed dispatch signs a new token (new iat).
    clock.advance(2_000)
    expect((await v.verify(`Bearer ${await sign(key, { nowMs: clock.now() })}`, body)).ok).toBe(true)
  })

  it('refuses a token living longer than 60 s even when correctly signed', async () => {
    const iat = Math.floor(NOW_MS / 1000)
    const token = await new SignJWT({ body_sha256: bodySha256(body) })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT' })
      .setIssuedAt(iat)
      .setExpirationTime(iat + 61)
      .setSubject('42')
      .setJti(JTI)
      .setAudience(AUD)
      .sign(key.privateKey)
    expect(await verifier().verify(`Bearer ${token}`, body)).toEqual({ ok: false, reason: 'token lives longer than 60 s' })
  })

  it('refuses a token signed by another key, a missing header and an HS256 token', async () => {
    const other = generateDevSigningKey()
    expect((await verifier().verify(`Bearer ${await sign(other)}`, body)).ok).toBe(false)
    expect((await verifier().verify(undefined, body)).ok).toBe(false)
    expect((await verifier().verify('Basic dXNlcjpwYXNz', body)).ok).toBe(false)
    const hs = await new SignJWT({ body_sha256: bodySha256(body) })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1', typ: 'JWT' })
      .setIssuedAt(Math.floor(NOW_MS / 1000))
      .setExpirationTime(Math.floor(NOW_MS / 1000) + 60)
      .setSubject('42')
      .setJti(JTI)
      .setAudience(AUD)
      .sign(new TextEncoder().encode('k'.repeat(32)))
    expect((await verifier().verify(`Bearer ${hs}`, body)).ok).toBe(false)
  })
})
