import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import { afterAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { withDevSecrets } from '../../src/dev-secrets.js'
import { bodySha256, loadSigningKey, signDispatchJwt } from '../../src/dispatch/jwt.js'
import { buildTestApp, TOKEN_SECRET } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const JWKS = '/wp-json/ai/v1/.well-known/jwks.json'

function ecPair(): { privatePem: string; publicPem: string } {
  const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  return {
    privatePem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  }
}

describe('GET /.well-known/jwks.json', () => {
  const cleanups: (() => Promise<void>)[] = []
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c()
  })

  it('publishes the current key and, during a rotation, the previous one: public members only', async () => {
    const current = ecPair()
    const previous = ecPair()
    const t = await buildTestApp({
      dialect: 'sqlite',
      name: `gw_t5_jwks_rotation_${RUN}`,
      env: {
        // One-line PEMs with literal \n, as env files carry them.
        AI_JWT_PRIVATE_KEY: current.privatePem.replace(/\n/g, '\\n'),
        AI_JWT_KID: 'key-2025-06',
        AI_JWT_PREVIOUS_PUBLIC_KEY: previous.publicPem,
        AI_JWT_PREVIOUS_KID: 'key-2025-01',
      },
    })
    cleanups.push(() => t.close())
    const res = await t.app.inject({ method: 'GET', url: JWKS })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    expect(res.headers['cache-control']).toMatch(/max-age=\d+/)
    const jwks = res.json() as JSONWebKeySet
    expect(jwks.keys.map((k) => k.kid)).toEqual(['key-2025-06', 'key-2025-01'])
    for (const key of jwks.keys) {
      expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' })
      expect(Object.keys(key).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y'])
    }

    // A worker holding this JWKS accepts tokens from either key while the rotation lasts.
    const body = '{"job_id":1}'
    for (const [pem, kid] of [[current.privatePem, 'key-2025-06'], [previous.privatePem, 'key-2025-01']] as const) {
      const token = await signDispatchJwt(loadSigningKey({ privateKeyPem: pem, kid }), { sub: 1, jti: 'a'.repeat(64), aud: 'http://w.test/', bodySha256: bodySha256(body), nowMs: Date.now() })
      const { protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), { audience: 'http://w.test/' })
      expect(protectedHeader.kid).toBe(kid)
    }
    // Plain permalinks reach it too.
    const plain = await t.app.inject({ method: 'GET', url: '/?rest_route=/ai/v1/.well-known/jwks.json' })
    expect(plain.json()).toEqual(jwks)
  })

  it('is empty where no key is configured (no external mode, not embedded)', async () => {
    const t = await buildTestApp({ dialect: 'sqlite', name: `gw_t5_jwks_none_${RUN}` })
    cleanups.push(() => t.close())
    const res = await t.app.inject({ method: 'GET', url: JWKS })
    expect(res.statusCode).toBe(200)
    expect(res.json()).toEqual({ keys: [] })
  })

  it('has a generated key in the embedded default, kept across restarts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw_t5_embedded-'))
    cleanups.push(async () => rmSync(dir, { recursive: true, force: true }))
    const start = async () => {
      const base = loadConfig({ LOG_LEVEL: 'silent' })
      expect(base.embedded).toBe(true)
      expect(base.jwtPrivateKey).toBeUndefined()
      // The embedded default's file, moved into a temp directory for the test.
      const config = withDevSecrets({ ...base, databaseUrl: `sqlite:${join(dir, 'ai-gateway.sqlite')}` }, () =>
        generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
      return buildApp(config, { logger: false, startWorkers: false })
    }
    const first = await start()
    const a = (await first.inject({ method: 'GET', url: JWKS })).json() as JSONWebKeySet
    await first.close()
    expect(a.keys).toHaveLength(1)
    expect(a.keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: expect.any(String) })
    expect(a.keys[0]).not.toHaveProperty('d')
    expect(statSync(join(dir, 'dev-secrets.json')).mode & 0o777).toBe(0o600)

    const second = await start()
    const b = (await second.inject({ method: 'GET', url: JWKS })).json() as JSONWebKeySet
    await second.close()
    expect(b).toEqual(a)
  })
})

describe('external mode configuration', () => {
  const key = ecPair().privatePem
  const base = { DATABASE_URL: 'sqlite:/tmp/never-opened.sqlite', AI_PUBLIC_TOKEN_SECRET: TOKEN_SECRET, AI_WORKER_URL: 'http://127.0.0.1:9/dispatch' }

  it('needs PUBLIC_URL, AI_WEBHOOK_SECRET and AI_JWT_PRIVATE_KEY, naming the variable', () => {
    const full = { ...base, PUBLIC_URL: 'https://example.test', AI_WEBHOOK_SECRET: 'whsec_c2VjcmV0', AI_JWT_PRIVATE_KEY: key }
    expect(() => loadConfig(full)).not.toThrow()
    expect(() => loadConfig({ ...full, PUBLIC_URL: undefined })).toThrow(/^PUBLIC_URL: /)
    expect(() => loadConfig({ ...full, AI_WEBHOOK_SECRET: undefined })).toThrow(/^AI_WEBHOOK_SECRET: /)
    expect(() => loadConfig({ ...full, AI_JWT_PRIVATE_KEY: undefined })).toThrow(/^AI_JWT_PRIVATE_KEY: /)
  })

  it('needs PUBLIC_URL even in the embedded default (callback_url never comes from Host)', () => {
    expect(() => loadConfig({ AI_WORKER_URL: 'http://127.0.0.1:9/dispatch' })).toThrow(/^PUBLIC_URL: /)
    expect(loadConfig({ AI_WORKER_URL: 'http://127.0.0.1:9/dispatch', PUBLIC_URL: 'http://127.0.0.1:3000' }).embedded).toBe(true)
  })

  it('refuses AI_QUEUE_TIMEOUT above 2 seconds', () => {
    expect(() => loadConfig({ ...base, PUBLIC_URL: 'https://example.test', AI_WEBHOOK_SECRET: 's', AI_JWT_PRIVATE_KEY: key, AI_QUEUE_TIMEOUT: '3' })).toThrow(/^AI_QUEUE_TIMEOUT: /)
  })
})
