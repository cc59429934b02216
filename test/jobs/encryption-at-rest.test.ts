/**
 * AI_ENCRYPTION_KEY (SPEC §2): `request_json` is AES-256-GCM ciphertext in the row, read back
 * with raw SQL, while the provider, an external worker and the owner see the plain request.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { openRequest } from '../../src/jobs/request-crypto.js'
import { bearer, buildTestApp, DIALECTS, testConfig, type TestApp } from '../helpers.js'
import { chatCompletion, promptOf, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { RUN } from '../support/run-tag.js'
import { BASE, createJob, QUIET_ENV, resultOf, row } from '../support/worker-app.js'

const KEY = randomBytes(32)
const SECRET_INPUT = 'my bank password is hunter2, summarise my diary'

describe.each(DIALECTS)('encryption at rest (%s)', (dialect) => {
  let fake: FakeProvider
  let t: TestApp
  let worker: Server
  const dispatched: unknown[] = []

  beforeAll(async () => {
    fake = await startFakeProvider((call) => ({ json: chatCompletion(`the provider read: ${promptOf(call)}`) }))
    t = await buildTestApp({
      dialect,
      name: `gw_encryption_${dialect}_${RUN}`,
      env: {
        ...QUIET_ENV, AI_ENCRYPTION_KEY: KEY.toString('base64'),
        AI_PROVIDER: 'openai', AI_PROVIDER_URL: fake.baseUrl('default'), AI_DEFAULT_MODEL: 'gpt-test',
      },
    })
    worker = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        dispatched.push(JSON.parse(Buffer.concat(chunks).toString('utf8')))
        res.writeHead(202).end()
      })
    })
    await new Promise<void>((resolve) => worker.listen(0, '127.0.0.1', () => resolve()))
  })
  afterAll(async () => {
    await t?.close()
    await fake?.close()
    await new Promise((resolve) => worker?.close(resolve))
  })

  const raw = async (id: number) => {
    const r = await sql<{ request_json: string; idempotency_key: string }>`SELECT request_json, idempotency_key FROM ${sql.table('ai_jobs')} WHERE id = ${id}`.execute(t.app.db.db)
    return r.rows[0]!
  }

  it('stores ciphertext, and the provider and the owner get the plain request and its answer', async () => {
    const owner = await bearer({ sub: '61' })
    const id = await createJob(t.app, owner, { input: SECRET_INPUT, metadata: { diary: 'private entry' } })
    const stored = await raw(id)
    expect(stored.request_json.startsWith('aes256gcm:')).toBe(true)
    expect(stored.request_json).not.toContain('hunter2')
    expect(stored.request_json).not.toContain('private entry')
    expect(JSON.parse(openRequest(stored.request_json, t.config.encryptionKeys, stored.idempotency_key))).toMatchObject({ input: SECRET_INPUT, metadata: { diary: 'private entry' } })

    expect(await t.app.pool.runOnce()).toBe(1)
    expect(fake.calls.at(-1)?.body.messages).toEqual([{ role: 'user', content: SECRET_INPUT }])
    const done = await row(t.app, id)
    expect(done.status).toBe('succeeded')
    expect(resultOf(done)?.output).toBe(`the provider read: ${SECRET_INPUT}`)
    const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: owner })
    expect(read.json().result.output).toBe(`the provider read: ${SECRET_INPUT}`)
  })

  it('a ciphertext moved onto another row does not decrypt there: the job fails with a clear error, nothing crashes', async () => {
    const owner = await bearer({ sub: '62' })
    const a = await createJob(t.app, owner, { input: 'first secret' })
    const b = await createJob(t.app, owner, { input: 'second secret' })
    await sql`UPDATE ${sql.table('ai_jobs')} SET request_json = ${(await raw(a)).request_json} WHERE id = ${b}`.execute(t.app.db.db)
    const calls = fake.calls.length
    await t.app.pool.runOnce()
    const moved = await row(t.app, b)
    expect(moved.status).toBe('failed')
    expect(moved.error_text).toMatch(/stored request cannot be read/)
    expect(fake.calls.slice(calls).some((c) => JSON.stringify(c.body).includes('first secret') && c.key === moved.idempotency_key)).toBe(false)
  })

  it('an external worker receives the plain request in the dispatch', async () => {
    const workerUrl = `http://127.0.0.1:${(worker.address() as AddressInfo).port}/dispatch`
    const external = await buildApp(testConfig({
      ...QUIET_ENV, DATABASE_URL: t.config.databaseUrl, AI_ENCRYPTION_KEY: KEY.toString('base64'),
      AI_WORKER_URL: workerUrl, PUBLIC_URL: 'http://gateway.test', AI_WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      AI_JWT_PRIVATE_KEY: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    }), { logger: false, startWorkers: false, migrate: false })
    try {
      const id = await createJob(external, await bearer({ sub: '63' }), { input: SECRET_INPUT })
      expect((await raw(id)).request_json).not.toContain('hunter2')
      await external.pool.runOnce()
      expect(dispatched.at(-1)).toMatchObject({ job_id: id, request: { input: SECRET_INPUT } })
    } finally {
      await external.close()
    }
  })
})
