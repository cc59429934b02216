/**
 * The data lifecycle and large results together (SPEC §12): a job whose result lives in the
 * result store is archived with that result in its line and its file removed, and erasing a user
 * removes their stored results too, leaving other users' files alone.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { findJob } from '../../src/db/jobs-repository.js'
import { runArchive } from '../../src/lifecycle/archive.js'
import { readArchiveRows } from '../../src/lifecycle/archive-files.js'
import { eraseUser } from '../../src/lifecycle/privacy.js'
import { bearer, DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { EVENTS_SECRET, startEventsReceiver, type EventsReceiver } from '../support/events-receiver.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const DAY = 86_400_000

describe.each(DIALECTS)('stored results through archive and erase (%s)', (dialect) => {
  const clock = manualClock(Date.now())
  const results = mkdtempSync(join(tmpdir(), `gw_lcres_${dialect}_`))
  const archive = mkdtempSync(join(tmpdir(), `gw_lcarc_${dialect}_`))
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  let receiver: EventsReceiver

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_lcres_${dialect}_${RUN}`)
    cleanup = db.cleanup
    receiver = await startEventsReceiver()
    app = await buildApp(testConfig({
      DATABASE_URL: db.url, RATE_LIMIT_MAX: '0', DEDUPE_WINDOW_SECONDS: '0',
      AI_EVENTS_URL: receiver.url, AI_EVENTS_SECRET: EVENTS_SECRET,
      REQUEST_MAX_BYTES: '200000', RESULT_INLINE_MAX_BYTES: '1024', RESULT_STORE_DIR: results,
    }), { logger: false, startWorkers: false, clock })
  })
  afterAll(async () => {
    await app?.close()
    await receiver?.close()
    await cleanup?.()
    rmSync(results, { recursive: true, force: true })
    rmSync(archive, { recursive: true, force: true })
  })

  const storedFiles = () => readdirSync(results, { recursive: true }).map(String).filter((p) => p.endsWith('.json'))

  async function bigJob(sub: string, words: string): Promise<number> {
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: await bearer({ sub }, { nowMs: clock.now() }), payload: { input: `${words} `.repeat(300) } })
    expect(res.statusCode).toBe(202)
    const id = res.json().job_id as number
    while ((await app.pool.runOnce()) > 0) { /* run it */ }
    const row = await findJob(app.db.db, id)
    expect(row).toMatchObject({ status: 'succeeded', result_json: null })
    expect(row!.result_ref).toMatch(/\.json$/)
    return id
  }

  it('an event to WordPress carries a stored result inline, with no link', async () => {
    const id = await bigJob('800', 'announced')
    await app.outbox!.runOnce()
    const event = receiver.received.find((e) => e.json.job.job_id === id)
    expect(event?.json.type).toBe('job.succeeded')
    expect((event!.json.job.result as { output: string }).output).toBe('announced '.repeat(300))
    expect(event!.json.job).not.toHaveProperty('result_url')
  })

  it('archives a stored result inside its line and deletes its file', async () => {
    const id = await bigJob('801', 'archived')
    expect(storedFiles()).toHaveLength(2)
    clock.advance(31 * DAY)
    const report = await runArchive(app.db, { ...app.lifecycle.hooks, cutoffMs: clock.now() - 30 * DAY, dir: archive, now: () => clock.now() })
    // The announced job is archived too (both are over 30 days old now).
    expect(report).toMatchObject({ archived: 2 })
    expect(await findJob(app.db.db, id)).toBeUndefined()
    expect(storedFiles()).toHaveLength(0)
    const files = readdirSync(archive).filter((f) => f.endsWith('.jsonl.gz'))
    const rows = (await Promise.all(files.map((f) => readArchiveRows(join(archive, f))))).flat()
    const line = rows.find((r) => Number(r.id) === id) as { id: number; result_inline: { output: string } }
    expect(Number(line.id)).toBe(id)
    expect(line.result_inline.output).toBe('archived '.repeat(300))
  })

  it("erasing a user removes their stored results and no one else's", async () => {
    await bigJob('802', 'erased')
    await bigJob('802', 'erased again')
    const other = await bigJob('803', 'kept')
    expect(storedFiles()).toHaveLength(3)
    const report = await eraseUser(app.db, 802, app.lifecycle.hooks)
    expect(report).toMatchObject({ user_id: 802, jobs_erased: 2, results_erased: 2, done: true })
    const left = storedFiles()
    expect(left).toHaveLength(1)
    expect(left[0]).toContain(`${other}-`)
    expect((await findJob(app.db.db, other))?.result_ref).toBeTruthy()
  })
})
