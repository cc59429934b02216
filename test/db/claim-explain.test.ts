import { CompiledQuery, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { claimCandidatesQuery } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { toDbTime } from '../../src/db/time.js'
import { dropMysqlDatabase, freshMysqlDatabase } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

/**
 * The claim must read the `claim (status, run_after, id)` index in ORDER BY order: a filesort or a
 * full scan would make InnoDB read (and, under FOR UPDATE, lock) far more rows than it returns,
 * and every replica's claim would serialize on them.
 */
const DB_NAME = `gw_t3_claim_explain_${RUN}`
const ROWS = 20_000
const NOW = Date.parse('2026-03-01T12:00:00.000Z')

interface ExplainRow {
  id: number
  select_type: string
  table: string
  type: string | null
  possible_keys: string | null
  key: string | null
  rows: number | string | null
  Extra: string | null
}

let handle: DatabaseHandle

/** Mixed statuses, as a table looks after months of use: mostly finished, some due, some later. */
function seedRow(i: number): Record<string, unknown> {
  const r = i % 100
  const status = r < 70 ? 'succeeded' : r < 78 ? 'failed' : r < 80 ? 'canceled' : r < 84 ? 'running' : 'pending'
  const created = NOW - (ROWS - i) * 1_000
  // Half the pending rows are due, half wait for a later run (a retry's backoff).
  const runAfter = status === 'pending' && i % 2 === 0 ? NOW + 60_000 + i : created
  return {
    user_id: i % 50,
    owner_key: `u:${i % 50}`,
    status,
    input_hash: i.toString(16).padStart(64, '0'),
    request_json: '{"model":"echo","input":"x","params":{}}',
    idempotency_key: `k${i}`.padStart(64, '0'),
    model: 'echo',
    request_id: `r${i}`,
    created_at: toDbTime(created),
    updated_at: toDbTime(created),
    run_after: toDbTime(runAfter),
    attempts: status === 'pending' ? 0 : 1,
    lease_owner: status === 'running' ? 'w' : null,
    lease_expires_at: status === 'running' ? toDbTime(NOW + 60_000) : null,
  }
}

async function explainClaim(limit: number): Promise<ExplainRow[]> {
  // Exactly the statement claimJobs runs, with its locking clause, table prefix and parameters.
  const compiled = claimCandidatesQuery(handle.db, NOW, limit).forUpdate().skipLocked().compile()
  expect(compiled.sql).toMatch(/for update skip locked/i)
  expect(compiled.sql).toMatch(/order by `run_after`, `id`/i)
  const result = await handle.db.executeQuery<ExplainRow>(CompiledQuery.raw(`EXPLAIN ${compiled.sql}`, [...compiled.parameters]))
  return result.rows
}

beforeAll(async () => {
  const url = await freshMysqlDatabase(DB_NAME)
  handle = await openDatabase({ url, prefix: 'wp_' })
  await runMigrations(handle, () => NOW)
  const raw = handle.db as unknown as { insertInto(t: string): { values(v: Record<string, unknown>[]): { execute(): Promise<unknown> } } }
  for (let start = 0; start < ROWS; start += 2_000) {
    await raw.insertInto('ai_jobs').values(Array.from({ length: 2_000 }, (_, k) => seedRow(start + k))).execute()
  }
  await sql`ANALYZE TABLE ${sql.id('wp_ai_jobs')}`.execute(handle.db)
}, 120_000)

afterAll(async () => {
  await handle?.close()
  await dropMysqlDatabase(DB_NAME)
})

describe('the claim query on a seeded, analyzed MariaDB table', () => {
  it('holds the rows the plan is meant for', async () => {
    const counts = await handle.db.selectFrom('ai_jobs').select(['status', sql<number>`COUNT(*)`.as('n')]).groupBy('status').execute()
    const by = Object.fromEntries(counts.map((c) => [c.status, Number(c.n)]))
    expect(by).toMatchObject({ succeeded: 14_000, failed: 1_600, canceled: 400, running: 800, pending: 3_200 })
    const due = await claimCandidatesQuery(handle.db, NOW, 10_000).execute()
    expect(due).toHaveLength(1_600)
  })

  for (const limit of [1, 8, 64]) {
    it(`uses the claim index in order, with no filesort and no full scan (LIMIT ${limit})`, async () => {
      const plan = await explainClaim(limit)
      expect(plan).toHaveLength(1)
      const step = plan[0]!
      expect(step.key).toBe('claim')
      expect(step.type).not.toBe('ALL')
      expect(step.type).toBe('range')
      expect(step.Extra ?? '').not.toMatch(/Using filesort/i)
      expect(step.Extra ?? '').not.toMatch(/Using temporary/i)
    })
  }

  it('returns the due rows oldest run_after first, then by id', async () => {
    const rows = await claimCandidatesQuery(handle.db, NOW, 50).execute()
    const ids = rows.map((r) => Number(r.id))
    const full = await handle.db.selectFrom('ai_jobs').select(['id', 'run_after']).where('id', 'in', ids).execute()
    const byId = new Map(full.map((r) => [Number(r.id), r.run_after]))
    const keys = ids.map((id) => `${byId.get(id)}#${String(id).padStart(10, '0')}`)
    expect(keys).toEqual([...keys].sort())
    expect(ids).toHaveLength(50)
  })

  it('runs on connections set to READ COMMITTED, so the claim takes no gap locks', async () => {
    // Several at once, so several pooled connections answer.
    const answers = await Promise.all(Array.from({ length: 6 }, () =>
      handle.db.transaction().execute(async (trx) => {
        const r = await sql<{ Variable_name: string; Value: string }>`SHOW SESSION VARIABLES LIKE '%isolation'`.execute(trx)
        await sql`SELECT SLEEP(0.05)`.execute(trx)
        // `tx_isolation` on MariaDB (and MySQL 5.7), `transaction_isolation` on MySQL 8 and MariaDB 11.1+.
        return r.rows.filter((v) => /^(tx|transaction)_isolation$/.test(v.Variable_name)).map((v) => v.Value)
      })))
    for (const values of answers) {
      expect(values.length).toBeGreaterThan(0)
      for (const v of values) expect(v).toBe('READ-COMMITTED')
    }
  })
})
