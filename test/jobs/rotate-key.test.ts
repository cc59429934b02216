/**
 * Key rotation (SPEC §12): rows under older keys, under the first form (no key id) and plain stay
 * readable; `rotate-key` seals them again with the first key in fenced batches, can be cut short
 * and run again, and refuses to run while a key that rows name is missing. A job whose key is
 * missing fails with an error naming it; the gateway goes on running the others.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { replaceRequestJson } from '../../src/db/jobs-repository.js'
import { openRequest, parseKeyring, RequestUnreadable, sealRequest } from '../../src/jobs/request-crypto.js'
import { MissingKeys, rotateBatch, rotateKeys } from '../../src/jobs/rotate-key.js'
import { bearer, buildTestApp, DIALECTS, testConfig, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { BASE, createJob, QUIET_ENV, resultOf, row } from '../support/worker-app.js'

const b64 = () => randomBytes(32).toString('base64')
const K1 = b64()
const K2 = b64()
const BARE = b64()
const GONE = b64()
/** The gateway after the rotation: k2 for new rows, k1 and the first-form key still listed. */
const RING = `k2:${K2},k1:${K1},first:${BARE}`

interface RawRow {
  id: number
  status: string
  request_json: string
  idempotency_key: string
  version: number
  updated_at: string
}

describe.each(DIALECTS)('key rotation (%s)', (dialect) => {
  let t: TestApp
  const writers = {} as Record<'bare' | 'plain' | 'old' | 'gone', FastifyInstance>
  let owner: Record<string, string>
  let worker: Server
  const dispatched: { job_id: number }[] = []

  beforeAll(async () => {
    // One owner's jobs fill every slot of a runOnce() here: no per-owner cap (JOB_OWNER_CONCURRENCY=0).
    t = await buildTestApp({ dialect, name: `gw_rotate_${dialect}_${RUN}`, env: { ...QUIET_ENV, AI_ENCRYPTION_KEY: RING, JOB_OWNER_CONCURRENCY: '0' } })
    // Gateways of earlier days on the same table: no key, the first form's bare key, k1 first, and a key since lost.
    const keys = { bare: BARE, plain: undefined, old: `k1:${K1}`, gone: `gone:${GONE},k1:${K1}` }
    for (const [name, key] of Object.entries(keys) as [keyof typeof writers, string | undefined][]) {
      writers[name] = await buildApp(testConfig({ ...QUIET_ENV, DATABASE_URL: t.config.databaseUrl, AI_ENCRYPTION_KEY: key }), { logger: false, startWorkers: false, migrate: false })
    }
    owner = await bearer({ sub: '71' })
    worker = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        dispatched.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { job_id: number })
        res.writeHead(202).end()
      })
    })
    await new Promise<void>((resolve) => worker.listen(0, '127.0.0.1', () => resolve()))
  })
  afterAll(async () => {
    for (const app of Object.values(writers)) await app.close()
    await t?.close()
    await new Promise((resolve) => worker?.close(resolve))
  })

  const keyring = () => t.config.encryptionKeys!
  const rows = async (): Promise<RawRow[]> => {
    const r = await sql<RawRow>`SELECT id, status, request_json, idempotency_key, version, updated_at FROM ${sql.table('ai_jobs')} ORDER BY id`.execute(t.app.db.db)
    return r.rows.map((x) => ({ ...x, id: Number(x.id), version: Number(x.version) }))
  }
  const plainOf = (r: RawRow) => openRequest(r.request_json, keyring(), r.idempotency_key)
  const create = (app: FastifyInstance, input: string) => createJob(app, owner, { input })

  it('jobs stored plain, in the first form, under the old key and under the new one all run', async () => {
    const ids = {
      plain: await create(writers.plain, 'stored plain'),
      bare: await create(writers.bare, 'stored in the first form'),
      old: await create(writers.old, 'stored under k1'),
      current: await create(t.app, 'stored under k2'),
    }
    const stored = new Map((await rows()).map((r) => [r.id, r.request_json]))
    expect(stored.get(ids.plain)).toMatch(/^\{/)
    expect(stored.get(ids.bare)).toMatch(/^aes256gcm:[A-Za-z0-9+/]+={0,2}$/)
    expect(stored.get(ids.old)).toMatch(/^aes256gcm:k1:/)
    expect(stored.get(ids.current)).toMatch(/^aes256gcm:k2:/)
    expect(await t.app.pool.runOnce()).toBe(4)
    for (const [form, id] of Object.entries(ids)) {
      const done = await row(t.app, id)
      expect(done.status, `${form}: ${done.error_text}`).toBe('succeeded')
      expect(resultOf(done)?.output).toBe(JSON.parse(openRequest(done.request_json, keyring(), done.idempotency_key)).input)
    }
  })

  it('rotate-key seals every older row with the first key; cut short and run again, it completes and damages no row', async () => {
    for (let i = 0; i < 4; i++) await create(writers.old, `pending under k1 #${i}`)
    for (let i = 0; i < 3; i++) await create(writers.bare, `pending in the first form #${i}`)
    for (let i = 0; i < 2; i++) await create(writers.plain, `pending plain #${i}`)
    await create(t.app, 'pending under k2')
    const before = await rows()
    const plaintext = new Map(before.map((r) => [r.id, plainOf(r)]))
    const older = before.filter((r) => r.request_json.startsWith('aes256gcm:') && !r.request_json.startsWith('aes256gcm:k2:'))
    expect(older.length).toBe(2 + 7)

    // Cut short: two batches of three rows, as if the run had been killed after them.
    const first = (await rotateBatch(t.app.db, keyring(), 0, 3))!
    const second = (await rotateBatch(t.app.db, keyring(), first.toId, 3))!
    const halfway = await rows()
    const doneSoFar = first.rotated + second.rotated
    expect(doneSoFar).toBeGreaterThan(0)
    expect(halfway.filter((r) => r.request_json.startsWith('aes256gcm:k2:')).length).toBe(before.filter((r) => r.request_json.startsWith('aes256gcm:k2:')).length + doneSoFar)
    expect(halfway.some((r) => r.request_json.startsWith('aes256gcm:k1:'))).toBe(true)
    for (const r of halfway) expect(plainOf(r)).toBe(plaintext.get(r.id))

    const report = await rotateKeys(t.app.db, keyring(), { batchSize: 4 })
    expect(report.before.byKeyId.get('k1')).toBeGreaterThan(0)
    expect(report.rotated).toBe(older.length - doneSoFar)
    expect(report.changedMeanwhile).toBe(0)
    expect(report.unreadable).toEqual([])
    expect(report.remaining).toBe(0)
    expect(report.after.withoutId).toBe(0)
    expect([...report.after.byKeyId]).toEqual([['k2', before.length - report.after.plain]])

    const after = await rows()
    for (const r of after) {
      const was = before.find((b) => b.id === r.id)!
      if (was.request_json.startsWith('{')) expect(r.request_json).toBe(was.request_json)
      else expect(r.request_json).toMatch(/^aes256gcm:k2:[A-Za-z0-9+/]+={0,2}$/)
      expect(plainOf(r)).toBe(plaintext.get(r.id))
      // Not a visible change: no ETag moves, and a running job's fenced writes still match.
      expect(r.version).toBe(was.version)
      expect(r.updated_at).toBe(was.updated_at)
      expect(r.status).toBe(was.status)
    }
    // The table no longer needs the older keys: the first key alone opens every sealed row.
    const k2Only = parseKeyring(`k2:${K2}`)
    for (const r of after) expect(openRequest(r.request_json, k2Only, r.idempotency_key)).toBe(plaintext.get(r.id))

    // Run again: nothing left to do, nothing touched.
    const again = await rotateKeys(t.app.db, keyring(), { batchSize: 4 })
    expect(again.rotated).toBe(0)
    expect(again.remaining).toBe(0)
    expect(await rows()).toEqual(after)

    // The pending jobs run on what the rotation wrote.
    const pending = after.filter((r) => r.status === 'pending')
    expect(pending.length).toBe(10)
    expect(await t.app.pool.runOnce()).toBe(8)
    expect(await t.app.pool.runOnce()).toBe(2)
    for (const r of pending) {
      const done = await row(t.app, r.id)
      expect(done.status, String(done.error_text)).toBe('succeeded')
      expect(resultOf(done)?.output).toBe(JSON.parse(plaintext.get(r.id)!).input)
    }
  })

  it('after the rotation the idempotency key still binds each ciphertext to its row', async () => {
    const donor = (await rows()).find((r) => r.request_json.startsWith('aes256gcm:k2:'))!
    const id = await create(t.app, 'a fresh job')
    await sql`UPDATE ${sql.table('ai_jobs')} SET request_json = ${donor.request_json} WHERE id = ${id}`.execute(t.app.db.db)
    const moved = await row(t.app, id)
    expect(() => openRequest(moved.request_json, keyring(), moved.idempotency_key)).toThrow(RequestUnreadable)
    await t.app.pool.runOnce()
    const failed = await row(t.app, id)
    expect(failed.status).toBe('failed')
    expect(failed.error_text).toMatch(/^stored request cannot be read: encryption key "k2" does not open it/)
  })

  it('--include-plain seals the plain rows too, and their jobs still run', async () => {
    const id = await create(writers.plain, 'plain, then sealed')
    const report = await rotateKeys(t.app.db, keyring(), { includePlain: true, batchSize: 500 })
    expect(report.rotated).toBe(report.before.plain)
    expect(report.before.plain).toBeGreaterThanOrEqual(4)
    expect(report.after.plain).toBe(0)
    expect(report.remaining).toBe(0)
    expect((await rows()).every((r) => r.request_json.startsWith('aes256gcm:k2:'))).toBe(true)
    await t.app.pool.runOnce()
    const done = await row(t.app, id)
    expect(done.status).toBe('succeeded')
    expect(resultOf(done)?.output).toBe('plain, then sealed')
  })

  it('each write is fenced on the value read, compared byte for byte: a row that changed meanwhile is left alone', async () => {
    const id = await create(writers.old, 'raced')
    const { request_json: read, idempotency_key: key } = await row(t.app, id)
    const plain = openRequest(read, keyring(), key)
    const mine = sealRequest(plain, keyring(), key)
    const theirs = sealRequest(plain, keyring(), key)
    // Another run got there first.
    expect(await replaceRequestJson(t.app.db.db, t.app.db.dialect, id, read, theirs)).toBe(true)
    expect(await replaceRequestJson(t.app.db.db, t.app.db.dialect, id, read, mine)).toBe(false)
    // The column's collation ignores case; the fence must not.
    const otherCase = theirs.slice(0, 13) + [...theirs.slice(13)].map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())).join('')
    expect(await replaceRequestJson(t.app.db.db, t.app.db.dialect, id, otherCase, mine)).toBe(false)
    expect((await row(t.app, id)).request_json).toBe(theirs)
    expect(await t.app.pool.runOnce()).toBe(1)
    expect(resultOf(await row(t.app, id))?.output).toBe('raced')
  })

  it('a key that is gone: rotate-key refuses and names it, its jobs fail naming it, and the gateway runs the others', async () => {
    const lost = [await create(writers.gone, 'under a lost key #1'), await create(writers.gone, 'under a lost key #2')]
    const fine = await create(t.app, 'under k2, beside them')
    const snapshot = await rows()
    const refused = await rotateKeys(t.app.db, keyring()).then(() => undefined, (e: unknown) => e)
    expect(refused).toBeInstanceOf(MissingKeys)
    expect((refused as MissingKeys).ids).toEqual([{ id: 'gone', rows: 2 }])
    expect((refused as MissingKeys).message).toMatch(/"gone" \(2 rows\)/)
    expect(await rows()).toEqual(snapshot)

    expect(await t.app.pool.runOnce()).toBe(3)
    for (const id of lost) {
      const failed = await row(t.app, id)
      expect(failed.status).toBe('failed')
      expect(failed.error_text).toBe('stored request cannot be read: encryption key "gone" is not in AI_ENCRYPTION_KEY')
    }
    expect((await row(t.app, fine)).status).toBe('succeeded')
    expect((await t.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
    const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${lost[0]}`, headers: owner })
    expect(read.statusCode).toBe(200)
    expect(read.json().status).toBe('failed')
    const later = await create(t.app, 'after the failures')
    await t.app.pool.runOnce()
    expect((await row(t.app, later)).status).toBe('succeeded')

    // External mode reads the request to dispatch it: the same error, and nothing is sent.
    const external = await buildApp(testConfig({
      ...QUIET_ENV, DATABASE_URL: t.config.databaseUrl, AI_ENCRYPTION_KEY: RING,
      AI_WORKER_URL: `http://127.0.0.1:${(worker.address() as AddressInfo).port}/dispatch`, PUBLIC_URL: 'http://gateway.test',
      AI_WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      AI_JWT_PRIVATE_KEY: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    }), { logger: false, startWorkers: false, migrate: false })
    try {
      const id = await create(writers.gone, 'dispatched under a lost key')
      const sent = await create(external, 'dispatched under k2')
      await external.pool.runOnce()
      const failed = await row(t.app, id)
      expect(failed.status).toBe('failed')
      expect(failed.error_text).toBe('stored request cannot be read: encryption key "gone" is not in AI_ENCRYPTION_KEY')
      expect(dispatched.map((d) => d.job_id)).toEqual([sent])
    } finally {
      await external.close()
    }
  })
})
