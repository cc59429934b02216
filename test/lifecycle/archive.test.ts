/**
 * The archive (SPEC §12) on SQLite and MariaDB: killed half-way through a file and again after a
 * file is durable, then run again, every archivable job ends up in exactly one archive line and
 * no other row moves; files are 0600 gzip JSON Lines; an encrypted request stays sealed; the
 * budget table is untouched. ARCHIVE_AFTER_DAYS runs on one replica at a time.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import type { DatabaseHandle } from '../../src/db/database.js'
import { toDbTime } from '../../src/db/time.js'
import { parseDuration, runArchive } from '../../src/lifecycle/archive.js'
import { DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { seedJob } from '../support/job-seed.js'
import { archiveLines, seedJobs, seedUsage, usageSnapshot, type Seeded } from '../support/lifecycle-seed.js'

const DAY = 86_400_000
const NOW = Date.parse('2026-09-01T12:00:00.000Z')
const KEY = randomBytes(32).toString('base64')

async function tableIds(handle: DatabaseHandle): Promise<Set<number>> {
  return new Set((await handle.db.selectFrom('ai_jobs').select('id').execute()).map((r) => Number(r.id)))
}

describe('parseDuration', () => {
  it('reads days, hours, minutes and seconds, and nothing else', () => {
    expect(parseDuration('30d')).toBe(30 * DAY)
    expect(parseDuration('12h')).toBe(12 * 3_600_000)
    expect(parseDuration('90m')).toBe(90 * 60_000)
    expect(parseDuration('0d')).toBeUndefined()
    expect(parseDuration('30')).toBeUndefined()
    expect(parseDuration('1w')).toBeUndefined()
    expect(parseDuration('-3d')).toBeUndefined()
  })
})

describe.each(DIALECTS)('archive (%s)', (dialect) => {
  const name = `gw_archive_a${dialect[0]}_${RUN}`
  let db: { url: string; cleanup: () => Promise<void> }
  let dir: string
  let app: Awaited<ReturnType<typeof buildApp>>
  let handle: DatabaseHandle
  let seeded: Seeded

  beforeAll(async () => {
    db = await freshDatabase(dialect, name)
    dir = mkdtempSync(join(tmpdir(), `${name}-files-`))
    const config = testConfig({ DATABASE_URL: db.url, AI_ENCRYPTION_KEY: KEY, ARCHIVE_DIR: dir })
    app = await buildApp(config, { logger: false, startWorkers: false, clock: manualClock(NOW) })
    handle = app.db
    seeded = await seedJobs(handle, config.encryptionKeys, NOW)
    await seedUsage(handle)
    // A receipt of an archived job and of a kept one.
    const [someOld] = [...seeded.old]
    const [someKept] = [...seeded.kept]
    await handle.db.insertInto('ai_webhook_receipts').values([
      { replay_key: 'a'.repeat(64), job_id: someOld!, created_at: toDbTime(NOW - 40 * DAY) },
      { replay_key: 'b'.repeat(64), job_id: someKept!, created_at: toDbTime(NOW - 2 * DAY) },
    ]).execute()
  })
  afterAll(async () => {
    await app?.close()
    await db?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  it('killed mid-write and again after a durable file, then run again: every old job archived exactly once, nothing else moved', async () => {
    const usageBefore = await usageSnapshot(handle)
    const cutoffMs = NOW - 30 * DAY
    const base = { cutoffMs, dir, batchSize: 4, now: () => NOW, inlineResult: async (row: { id: number }) => ({ stored_for: Number(row.id) }) }

    // Run 1: the third batch's write dies half-way.
    let batches = 0
    await expect(runArchive(handle, { ...base, faults: { midWrite: () => { if (++batches === 3) throw new Error('killed mid-write') } } })).rejects.toThrow('killed mid-write')
    const afterFirst = await tableIds(handle)
    expect(seeded.old.size - [...seeded.old].filter((id) => afterFirst.has(id)).length).toBe(8)
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toHaveLength(1)
    const runs1 = await handle.db.selectFrom('ai_archive_runs').select(['state']).orderBy('id').execute()
    expect(runs1.map((r) => r.state)).toEqual(['done', 'done', 'writing'])

    // Run 2: the interrupted batch is written again and is durable, then the run dies before its delete.
    const deletes: number[][] = []
    await expect(runArchive(handle, {
      ...base,
      onDeleteRows: async (rows) => { deletes.push(rows.map((r) => Number(r.id))) },
      faults: { afterWritten: () => { throw new Error('killed before delete') } },
    })).rejects.toThrow('killed before delete')
    expect(await tableIds(handle)).toEqual(afterFirst)
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])
    expect((await handle.db.selectFrom('ai_archive_runs').select('state').orderBy('id').execute()).map((r) => r.state)).toEqual(['done', 'done', 'written'])

    // Run 3 finishes: the written batch is deleted without writing again, then the rest.
    const report = await runArchive(handle, { ...base, onDeleteRows: async (rows) => { deletes.push(rows.map((r) => Number(r.id))) } })
    expect(report.resumed).toBe(1)
    expect(report.archived).toBe(seeded.old.size - 8)

    const left = await tableIds(handle)
    expect(left).toEqual(seeded.kept)
    const { files, lines } = await archiveLines(dir)
    expect(files.every((f) => f.endsWith('.jsonl.gz'))).toBe(true)
    const ids = lines.map((l) => Number(l.id))
    expect(ids.length).toBe(new Set(ids).size)
    expect(new Set(ids)).toEqual(seeded.old)
    // Every row that run 3 deleted went through the hook first, and none twice.
    expect(deletes.flat().sort((a, b) => a - b)).toEqual([...seeded.old].filter((id) => afterFirst.has(id)).sort((a, b) => a - b))
    for (const f of files) expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600)
    for (const line of lines) {
      const id = Number(line.id)
      expect(line.request_json).toBe(seeded.stored.get(id))
      expect(String(line.request_json)).toMatch(/^aes256gcm:/)
      expect(String(line.request_json)).not.toContain('private words')
      expect(line.user_id).toBe(seeded.owner.get(id))
      expect(['succeeded', 'failed', 'canceled']).toContain(line.status)
      expect(line.result_inline).toEqual({ stored_for: id })
    }
    expect(await usageSnapshot(handle)).toEqual(usageBefore)
    const receipts = await handle.db.selectFrom('ai_webhook_receipts').select('job_id').execute()
    expect(receipts.map((r) => Number(r.job_id))).toEqual([[...seeded.kept][0]])
    expect((await handle.db.selectFrom('ai_archive_runs').select('state').where('state', '!=', 'done').execute())).toEqual([])

    // A run with nothing left to do archives nothing and writes no file.
    const again = await runArchive(handle, base)
    expect(again).toEqual({ archived: 0, files: [], changedMeanwhile: 0, resumed: 0 })
    expect(readdirSync(dir).sort()).toEqual(files)
  })

  it('keeps out of the file a row retried between its write and its delete, which a later run archives once', async () => {
    const cutoffMs = NOW - 30 * DAY
    const row = await seedJob(handle, NOW - 50 * DAY, { status: 'failed', error_text: 'x', user_id: 7, owner_key: 'u:7' })
    const id = Number(row.id)
    const sub = mkdtempSync(join(dir, 'retry-'))
    try {
      await runArchive(handle, {
        cutoffMs, dir: sub, now: () => NOW,
        // An admin retry after the file is durable: the row changes (version, status).
        faults: { afterWritten: async () => { await sql`UPDATE ${sql.id(`${handle.prefix}ai_jobs`)} SET version = version + 1 WHERE id = ${id}`.execute(handle.db) } },
      })
      expect((await tableIds(handle)).has(id)).toBe(true)
      expect((await archiveLines(sub)).lines.map((l) => Number(l.id))).toEqual([])
      await runArchive(handle, { cutoffMs, dir: sub, now: () => NOW })
      expect((await tableIds(handle)).has(id)).toBe(false)
      expect((await archiveLines(sub)).lines.map((l) => [Number(l.id), Number(l.version)])).toEqual([[id, Number(row.version) + 1]])
    } finally {
      rmSync(sub, { recursive: true, force: true })
    }
  })
})

describe.each(DIALECTS)('ARCHIVE_AFTER_DAYS across two replicas (%s)', (dialect) => {
  const name = `gw_archive_r${dialect[0]}_${RUN}`
  let db: { url: string; cleanup: () => Promise<void> }
  let dir: string
  const apps: Awaited<ReturnType<typeof buildApp>>[] = []

  beforeAll(async () => {
    db = await freshDatabase(dialect, name)
    dir = mkdtempSync(join(tmpdir(), `${name}-files-`))
  })
  afterAll(async () => {
    for (const app of apps) await app.close()
    await db?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  it('runs on one replica while the other finds the lock taken; off without the variable', async () => {
    let release!: () => void
    const gate = new Promise<void>((r) => { release = r })
    let entered!: () => void
    const inside = new Promise<void>((r) => { entered = r })
    const config = testConfig({ DATABASE_URL: db.url, AI_ENCRYPTION_KEY: KEY, ARCHIVE_DIR: dir, ARCHIVE_AFTER_DAYS: '30' })
    const a = await buildApp(config, {
      logger: false, startWorkers: false, clock: manualClock(NOW),
      lifecycle: { hooks: { inlineResult: async () => { entered(); await gate; return undefined } } },
    })
    apps.push(a)
    const b = await buildApp(config, { logger: false, startWorkers: false, clock: manualClock(NOW), migrate: false })
    apps.push(b)
    const seeded = await seedJobs(a.db, config.encryptionKeys, NOW)

    const first = a.lifecycle.runArchiveOnce()
    await inside
    expect(await b.lifecycle.runArchiveOnce()).toBe('busy')
    release()
    const report = await first
    expect(report).toMatchObject({ archived: seeded.old.size })
    expect(new Set((await archiveLines(dir)).lines.map((l) => Number(l.id)))).toEqual(seeded.old)
    // The other replica, once the lock is free, finds nothing left.
    expect(await b.lifecycle.runArchiveOnce()).toMatchObject({ archived: 0 })
    expect((await archiveLines(dir)).lines).toHaveLength(seeded.old.size)

    const off = await buildApp(testConfig({ DATABASE_URL: db.url, ARCHIVE_DIR: dir }), { logger: false, startWorkers: false, migrate: false })
    apps.push(off)
    expect(await off.lifecycle.runArchiveOnce()).toBe('off')
  })

  it('refuses a bad ARCHIVE_AFTER_DAYS and a non-whsec AI_EVENTS_SECRET at start-up, naming the variable', () => {
    expect(() => testConfig({ ARCHIVE_AFTER_DAYS: 'monthly' })).toThrow(/^ARCHIVE_AFTER_DAYS: /)
    expect(() => testConfig({ ARCHIVE_AFTER_DAYS: '0' })).toThrow(/^ARCHIVE_AFTER_DAYS: /)
    expect(() => testConfig({ AI_EVENTS_SECRET: 'plain-secret' })).toThrow(/^AI_EVENTS_SECRET: .*whsec_/)
    expect(testConfig({ ARCHIVE_AFTER_DAYS: '30' }).archiveAfterDays).toBe(30)
  })
})
