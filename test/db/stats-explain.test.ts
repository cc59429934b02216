import { CompiledQuery, sql, type Compilable } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { jobsByDayQuery, latencySamplesQuery } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { toDbTime } from '../../src/db/time.js'
import { freshDatabase, type Dialect } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

/**
 * The admin page's stats stay cheap on a big table: they read `status_created (status,
 * created_at)` over the range asked, never the whole table, and the latency samples come off
 * the index in order (no sort of every finished job of a day), on MariaDB and on SQLite.
 */
const ROWS = 20_000
const DAYS = 200
const DAY = 86_400_000
const NOW = Date.parse('2026-03-01T00:00:00.000Z')
const STATUSES = ['succeeded', 'succeeded', 'succeeded', 'failed', 'canceled', 'pending', 'running'] as const

function seedRow(i: number): Record<string, unknown> {
  const created = NOW - DAYS * DAY + Math.floor((i * DAYS * DAY) / ROWS)
  const status = STATUSES[i % STATUSES.length]!
  return {
    user_id: i % 50, owner_key: `u:${i % 50}`, status,
    input_hash: i.toString(16).padStart(64, '0'), request_json: '{}', idempotency_key: `k${i}`.padStart(64, '0'),
    model: 'echo', request_id: `r${i}`, created_at: toDbTime(created), updated_at: toDbTime(created), run_after: toDbTime(created),
    input_tokens: status === 'succeeded' ? 10 : null, output_tokens: status === 'succeeded' ? 20 : null,
    provider_ms: status === 'succeeded' || status === 'failed' ? 100 + (i % 900) : null,
  }
}

describe.each(['mysql', 'sqlite'] as Dialect[])('the stats queries on a seeded table (%s)', (dialect) => {
  let handle: DatabaseHandle
  let cleanup: () => Promise<void>

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_stats_explain_${dialect}_${RUN}`)
    cleanup = db.cleanup
    handle = await openDatabase({ url: db.url, prefix: 'wp_' })
    await runMigrations(handle, () => NOW)
    const raw = handle.db as unknown as { insertInto(t: string): { values(v: Record<string, unknown>[]): { execute(): Promise<unknown> } } }
    for (let start = 0; start < ROWS; start += 1_000) {
      await raw.insertInto('ai_jobs').values(Array.from({ length: 1_000 }, (_, k) => seedRow(start + k))).execute()
    }
    if (dialect === 'mysql') await sql`ANALYZE TABLE ${sql.id('wp_ai_jobs')}`.execute(handle.db)
    else await sql`ANALYZE`.execute(handle.db)
  }, 120_000)
  afterAll(async () => {
    await handle?.close()
    await cleanup?.()
  })

  async function plan(query: Compilable): Promise<Record<string, unknown>[]> {
    const compiled = query.compile()
    const explain = dialect === 'mysql' ? 'EXPLAIN' : 'EXPLAIN QUERY PLAN'
    return (await handle.db.executeQuery<Record<string, unknown>>(CompiledQuery.raw(`${explain} ${compiled.sql}`, [...compiled.parameters]))).rows
  }

  it('counts a week by day and status from a range of an index on created_at, not a scan of the table', async () => {
    const steps = await plan(jobsByDayQuery(handle, NOW - 7 * DAY, NOW))
    if (dialect === 'mysql') {
      expect(steps).toHaveLength(1)
      // Either index reads only the week's rows: `created (created_at, id)` as one range, or
      // `status_created` as one range per status.
      expect(steps[0]).toMatchObject({ type: 'range' })
      expect(['created', 'status_created']).toContain(steps[0]!.key)
      // About one week's rows of 200 days'.
      expect(Number(steps[0]!.rows)).toBeLessThan(ROWS / 10)
    } else {
      expect(steps.map((s) => s.detail).join('\n')).toMatch(/SEARCH wp_ai_jobs USING INDEX wp_ai_jobs_status_created \(status=\? AND created_at>\? AND created_at<\?\)/)
    }
    const rows = await jobsByDayQuery(handle, NOW - 7 * DAY, NOW).execute()
    expect(rows.reduce((n, r) => n + Number(r.jobs), 0)).toBe(7 * ROWS / DAYS)
  })

  it("reads a day's newest latency samples off status_created in order, with no sort", async () => {
    const query = latencySamplesQuery(handle.db, 'succeeded', NOW - DAY, NOW, 1000)
    const steps = await plan(query)
    if (dialect === 'mysql') {
      expect(steps).toHaveLength(1)
      expect(steps[0]).toMatchObject({ key: 'status_created', type: 'range' })
      expect(String(steps[0]!.Extra ?? '')).not.toMatch(/filesort|temporary/i)
    } else {
      const detail = steps.map((s) => s.detail).join('\n')
      expect(detail).toMatch(/USING INDEX wp_ai_jobs_status_created \(status=\? AND created_at>\? AND created_at<\?\)/)
      expect(detail).not.toMatch(/TEMP B-TREE/)
    }
    const samples = await query.execute()
    const expected = Array.from({ length: ROWS }, (_, i) => seedRow(i))
      .filter((r) => r.status === 'succeeded' && (r.created_at as string) >= toDbTime(NOW - DAY) && (r.created_at as string) < toDbTime(NOW))
    expect(samples.length).toBe(expected.length)
    expect(samples.length).toBeGreaterThan(30)
  })
})
