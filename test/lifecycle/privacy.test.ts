/**
 * The privacy routes and `eraseUser` (SPEC §12) on SQLite and MariaDB: export pages one user's
 * jobs with their requests opened; erase removes that user's rows, stored results (the hook) and
 * archive lines, and leaves every other user's alone. The routes take an admin login or a call
 * signed with AI_EVENTS_SECRET; a wrong signature, an old timestamp and a replayed webhook-id are
 * refused, and the signature opens no other admin route.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import type { WordPressAuthenticator } from '../../src/auth/authenticate.js'
import { manualClock } from '../../src/clock.js'
import type { JobRow } from '../../src/db/jobs-repository.js'
import { runArchive } from '../../src/lifecycle/archive.js'
import { eraseUser } from '../../src/lifecycle/privacy.js'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { archiveLines, seedJobs, seedUsage, usageSnapshot, type Seeded } from '../support/lifecycle-seed.js'

const BASE = '/wp-json/ai/v1'
const DAY = 86_400_000
const NOW = Date.parse('2026-09-01T12:00:00.000Z')
const KEY = randomBytes(32).toString('base64')
const SECRET = `whsec_${randomBytes(32).toString('base64')}`
const OTHER = `whsec_${randomBytes(32).toString('base64')}`

const logins: WordPressAuthenticator = {
  cookie: async () => ({ kind: 'none' }),
  pageCookie: async () => ({ kind: 'none' }),
  token: async (principal) => principal,
  basic: async ({ authorization }) => {
    if (authorization === 'Basic admin') return { kind: 'user', principal: { method: 'application_password', userId: 9, ownerKey: 'u:9', canCreate: true, isAdmin: true } }
    if (authorization === 'Basic editor') return { kind: 'user', principal: { method: 'application_password', userId: 8, ownerKey: 'u:8', canCreate: true, isAdmin: false } }
    return { kind: 'invalid' }
  },
}
const ADMIN = { authorization: 'Basic admin' }

function signed(body: string, options: { secret?: string; atMs?: number; id?: string } = {}): Record<string, string> {
  return { ...signStandardWebhook({ secret: options.secret ?? SECRET, id: options.id ?? `msg_${randomBytes(16).toString('hex')}`, timestampSeconds: Math.floor((options.atMs ?? NOW) / 1000), body }) }
}

describe.each(DIALECTS)('privacy (%s)', (dialect) => {
  const name = `gw_archive_p${dialect[0]}_${RUN}`
  let db: { url: string; cleanup: () => Promise<void> }
  let dir: string
  let app: FastifyInstance
  let seeded: Seeded
  const hookRows: JobRow[] = []

  beforeAll(async () => {
    db = await freshDatabase(dialect, name)
    dir = mkdtempSync(join(tmpdir(), `${name}-files-`))
    const config = testConfig({ DATABASE_URL: db.url, AI_ENCRYPTION_KEY: KEY, ARCHIVE_DIR: dir, AI_EVENTS_SECRET: SECRET })
    app = await buildApp(config, {
      logger: false, startWorkers: false, clock: manualClock(NOW), wordpress: logins,
      lifecycle: { hooks: { onDeleteRows: async (rows) => { hookRows.push(...rows); return rows.filter((r) => r.status === 'succeeded').length } } },
    })
    seeded = await seedJobs(app.db, config.encryptionKeys, NOW)
    await seedUsage(app.db)
    // Half in archive files, half still in the table.
    await runArchive(app.db, { cutoffMs: NOW - 30 * DAY, dir, batchSize: 5, now: () => NOW })
  })
  afterAll(async () => {
    await app?.close()
    await db?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  const tableOf = async (userId: number) => (await app.db.db.selectFrom('ai_jobs').select('id').where('user_id', '=', userId).orderBy('id').execute()).map((r) => Number(r.id))
  const linesOf = async (userId: number) => (await archiveLines(dir)).lines.filter((l) => l.user_id === userId).map((l) => Number(l.id)).sort((a, b) => a - b)

  it('exports one user\'s jobs page by page, those in the table and those archived, with the request opened and the metadata', async () => {
    const inTable = await tableOf(2)
    const archived = await linesOf(2)
    expect(inTable.length).toBeGreaterThan(1)
    expect(archived.length).toBeGreaterThan(1)
    const mine = [...inTable, ...archived].sort((a, b) => a - b)
    const page1 = await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export?page=1&per_page=1`, headers: ADMIN })
    expect(page1.statusCode).toBe(200)
    expect(page1.headers['cache-control']).toBe('private, no-store')
    const body1 = page1.json()
    expect(body1).toMatchObject({ user_id: 2, page: 1, per_page: 1, done: false })
    const all = await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export?page=1&per_page=100`, headers: ADMIN })
    const body = all.json()
    expect(body.done).toBe(true)
    expect(body.jobs.map((j: { job_id: number }) => j.job_id).sort((a: number, b: number) => a - b)).toEqual(mine)
    for (const job of body.jobs) {
      expect(job.user_id).toBe(2)
      expect(job.request.input).toMatch(/^private words of user 2 #\d+$/)
      expect(job.request.params).toEqual({ max_tokens: 10 })
      expect(job.metadata).toEqual({ post_id: expect.any(Number) })
      expect(job.request.metadata).toEqual(job.metadata)
    }
    expect(body1.jobs[0].job_id).toBe(body.jobs[0].job_id)
    // The archived ones keep their answers: a succeeded archived job exports its result.
    const archivedShown = body.jobs.filter((j: { job_id: number }) => archived.includes(j.job_id))
    expect(archivedShown).toHaveLength(archived.length)
    for (const job of archivedShown) if (job.status === 'succeeded') expect(job.result).toEqual({ output: expect.stringMatching(/^answer \d+$/) })
    // Pages of one cross from the table into the archive and end with done, each job once.
    const paged: number[] = []
    for (let p = 1; p <= mine.length + 1; p++) {
      const one = (await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export?page=${p}&per_page=1`, headers: ADMIN })).json()
      paged.push(...one.jobs.map((j: { job_id: number }) => j.job_id))
      expect(one.done).toBe(p >= mine.length)
      if (one.done) break
    }
    expect(paged.sort((a, b) => a - b)).toEqual(mine)
    const past = await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export?page=9&per_page=100`, headers: ADMIN })
    expect(past.json()).toMatchObject({ done: true, jobs: [] })
  })

  it('refuses a bad user id or page in the WordPress shape, and a non-admin', async () => {
    const zero = await app.inject({ method: 'GET', url: `${BASE}/admin/users/0/export`, headers: ADMIN })
    const word = await app.inject({ method: 'GET', url: `${BASE}/admin/users/alice/export`, headers: ADMIN })
    expect(word.json()).toMatchObject({ code: 'ai_not_found', data: { status: 404 } })
    expect(zero.statusCode).toBe(400)
    expect(zero.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
    const page = await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export?per_page=500`, headers: ADMIN })
    expect(page.statusCode).toBe(400)
    const editor = await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export`, headers: { authorization: 'Basic editor' } })
    expect(editor.statusCode).toBe(403)
    const nobody = await app.inject({ method: 'GET', url: `${BASE}/admin/users/2/export` })
    expect(nobody.statusCode).toBe(401)
    const body = await app.inject({ method: 'POST', url: `${BASE}/admin/users/2/erase`, headers: { ...ADMIN, 'content-type': 'application/json' }, payload: '{"all":true}' })
    expect(body.statusCode).toBe(400)
    expect(await tableOf(2)).not.toEqual([])
  })

  it('takes a signed call in place of the admin login; refuses a wrong secret, an old timestamp, a replay, and opens no other route', async () => {
    const url = `${BASE}/admin/users/3/export?page=1&per_page=100`
    const headers = signed('')
    const ok = await app.inject({ method: 'GET', url, headers })
    expect(ok.statusCode).toBe(200)
    expect(ok.json().jobs.length).toBe((await tableOf(3)).length + (await linesOf(3)).length)

    const replay = await app.inject({ method: 'GET', url, headers })
    expect(replay.statusCode).toBe(403)
    expect(replay.json()).toMatchObject({ code: 'ai_invalid_signature', message: expect.stringContaining('used already') })
    const wrong = await app.inject({ method: 'GET', url, headers: signed('', { secret: OTHER }) })
    expect(wrong.statusCode).toBe(403)
    expect(wrong.json().message).toContain('signature_mismatch')
    const old = await app.inject({ method: 'GET', url, headers: signed('', { atMs: NOW - 301_000 }) })
    expect(old.statusCode).toBe(403)
    expect(old.json().message).toContain('timestamp_out_of_range')
    const fresh = await app.inject({ method: 'GET', url, headers: signed('', { atMs: NOW - 299_000 }) })
    expect(fresh.statusCode).toBe(200)
    // A signature over other bytes than the body sent.
    const body = await app.inject({ method: 'POST', url: `${BASE}/admin/users/3/erase`, headers: { ...signed('{}'), 'content-type': 'application/json' }, payload: '{ }' })
    expect(body.statusCode).toBe(403)
    expect(await tableOf(3)).not.toEqual([])

    // The same kind of signature on every other admin route is no login at all.
    for (const [method, path] of [['GET', '/admin/jobs'], ['GET', '/admin/stats'], ['GET', '/admin/usage.csv'], ['POST', `/admin/jobs/${[...seeded.kept][0]}/retry`]] as const) {
      const res = await app.inject({ method, url: `${BASE}${path}`, headers: signed(method === 'POST' ? '{}' : ''), ...(method === 'POST' ? { payload: '{}', headers: { ...signed('{}'), 'content-type': 'application/json' } } : {}) })
      expect(res.statusCode, path).toBe(401)
    }
  })

  it('erases one user (rows, stored results, archive lines) with a signed POST of {}; the others and the budgets stay', async () => {
    const usageBefore = await usageSnapshot(app.db)
    const rows2 = await tableOf(2)
    const lines2 = await linesOf(2)
    const others = { t1: await tableOf(1), t3: await tableOf(3), l1: await linesOf(1), l3: await linesOf(3) }
    expect(rows2.length).toBeGreaterThan(0)
    expect(lines2.length).toBeGreaterThan(0)
    hookRows.length = 0

    const res = await app.inject({ method: 'POST', url: `${BASE}/admin/users/2/erase`, headers: { ...signed('{}'), 'content-type': 'application/json' }, payload: '{}' })
    expect(res.statusCode).toBe(200)
    const succeeded = hookRows.filter((r) => r.status === 'succeeded').length
    expect(res.json()).toEqual({ user_id: 2, jobs_erased: rows2.length, results_erased: succeeded, archive_lines_erased: lines2.length, archive_files_missing: 0, done: true })
    expect(hookRows.map((r) => Number(r.id)).sort((a, b) => a - b)).toEqual(rows2)

    expect(await tableOf(2)).toEqual([])
    expect(await linesOf(2)).toEqual([])
    expect({ t1: await tableOf(1), t3: await tableOf(3), l1: await linesOf(1), l3: await linesOf(3) }).toEqual(others)
    expect(await usageSnapshot(app.db)).toEqual(usageBefore)
    for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600)
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])

    // Again: nothing left, done.
    const again = await app.inject({ method: 'POST', url: `${BASE}/admin/users/2/erase`, headers: ADMIN, payload: {} })
    expect(again.json()).toMatchObject({ jobs_erased: 0, archive_lines_erased: 0, done: true })
  })

  it('erases in bounded calls: done stays false until no row is left', async () => {
    const rows1 = await tableOf(1)
    expect(rows1.length).toBeGreaterThan(1)
    const first = await eraseUser(app.db, 1, { maxRows: 1, batchSize: 1 })
    expect(first).toMatchObject({ jobs_erased: 1, archive_lines_erased: 0, done: false })
    expect(await tableOf(1)).toEqual(rows1.slice(1))
    const lines1 = await linesOf(1)
    const rest = await eraseUser(app.db, 1)
    expect(rest).toMatchObject({ jobs_erased: rows1.length - 1, archive_lines_erased: lines1.length, done: true })
    expect(await linesOf(1)).toEqual([])
    expect((await linesOf(3)).length).toBeGreaterThan(0)
  })

  it('documents the privacy routes in /openapi.json with the signed-call scheme', async () => {
    const doc = (await app.inject({ method: 'GET', url: `${BASE}/openapi.json` })).json()
    const exp = doc.paths[`${BASE}/admin/users/{id}/export`].get
    expect(exp.security).toContainEqual({ signedCall: [] })
    expect(doc.paths[`${BASE}/admin/users/{id}/erase`].post.security).toContainEqual({ signedCall: [] })
    expect(doc.paths[`${BASE}/admin/jobs`].get.security).not.toContainEqual({ signedCall: [] })
    expect(doc.components.securitySchemes.signedCall).toMatchObject({ type: 'apiKey', in: 'header', name: 'webhook-signature' })
  })
})
