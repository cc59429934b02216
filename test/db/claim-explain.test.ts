import { CompiledQuery, RawNode, SelectQueryNode, sql, type KyselyPlugin } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import {
  batchedWalkQuery, claimJobs, claimLocksQuery, newClaimRotation, ownerWalkQuery, pickedJobsQuery, runningByOwnerQuery, OWNER_SCAN_ROWS,
} from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { toDbTime } from '../../src/db/time.js'
import { dropMysqlDatabase, freshMysqlDatabase } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

/**
 * Every statement the fair claim runs must read an index in its ORDER BY order or by primary
 * key: a filesort or a full scan would make InnoDB read (and, under FOR UPDATE, lock) far more
 * rows than it returns, and every replica's claim would serialize on them. And the claim as a
 * whole reads a few hundred index entries however deep one owner's queue is.
 */
const DB_NAME = `gw_t3_claim_explain_${RUN}`
const ROWS = 20_000
const HOG_ROWS = 5_000
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

/** Mixed statuses, as a table looks after months of use: mostly finished, some due, some later, some bulk. */
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
    priority: i % 5 === 0 ? 1 : 0,
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

/** One owner with a deep interactive queue, all due, older than everyone else's. */
function hogRow(i: number): Record<string, unknown> {
  const created = NOW - 30 * 86_400_000 + i
  return {
    user_id: 999, owner_key: 'u:999', status: 'pending', priority: 0,
    input_hash: 'h'.padStart(64, '0'), request_json: '{"model":"echo","input":"x","params":{}}',
    idempotency_key: `hog${i}`.padStart(64, '0'), model: 'echo', request_id: `h${i}`,
    created_at: toDbTime(created), updated_at: toDbTime(created), run_after: toDbTime(created),
  }
}

async function explain(compiled: { sql: string; parameters: readonly unknown[] }): Promise<ExplainRow[]> {
  const result = await handle.db.executeQuery<ExplainRow>(CompiledQuery.raw(`EXPLAIN ${compiled.sql}`, [...compiled.parameters]))
  return result.rows
}

function expectIndexed(plan: ExplainRow[], key: string): void {
  expect(plan).toHaveLength(1)
  const step = plan[0]!
  expect(step.key).toBe(key)
  expect(step.type).not.toBe('ALL')
  expect(step.type).not.toBe('index')
  expect(['range', 'ref', 'const', 'eq_ref']).toContain(step.type)
  expect(step.Extra ?? '').not.toMatch(/Using filesort/i)
  expect(step.Extra ?? '').not.toMatch(/Using temporary/i)
}

/** The session's Handler_read_* counters: index entries and rows the server read for this connection. */
async function handlerReads(): Promise<number> {
  const r = await sql<{ Variable_name: string; Value: string }>`SHOW SESSION STATUS LIKE 'Handler_read%'`.execute(handle.db)
  return r.rows.reduce((sum, row) => sum + Number(row.Value), 0)
}

beforeAll(async () => {
  const url = await freshMysqlDatabase(DB_NAME)
  // One connection, so the session counters below see every statement of a claim.
  handle = await openDatabase({ url, prefix: 'wp_', poolSize: 1 })
  await runMigrations(handle, () => NOW)
  const raw = handle.db as unknown as { insertInto(t: string): { values(v: Record<string, unknown>[]): { execute(): Promise<unknown> } } }
  for (let start = 0; start < ROWS; start += 2_000) {
    await raw.insertInto('ai_jobs').values(Array.from({ length: 2_000 }, (_, k) => seedRow(start + k))).execute()
  }
  for (let start = 0; start < HOG_ROWS; start += 1_000) {
    await raw.insertInto('ai_jobs').values(Array.from({ length: 1_000 }, (_, k) => hogRow(start + k))).execute()
  }
  await sql`ANALYZE TABLE ${sql.id('wp_ai_jobs')}`.execute(handle.db)
}, 120_000)

afterAll(async () => {
  await handle?.close()
  await dropMysqlDatabase(DB_NAME)
})

describe('the fair claim statements on a seeded, analyzed MariaDB table', () => {
  it('holds the rows the plans are meant for', async () => {
    const counts = await handle.db.selectFrom('ai_jobs').select(['status', sql<number>`COUNT(*)`.as('n')]).groupBy('status').execute()
    const by = Object.fromEntries(counts.map((c) => [c.status, Number(c.n)]))
    expect(by).toMatchObject({ succeeded: 14_000, failed: 1_600, canceled: 400, running: 800, pending: 3_200 + HOG_ROWS })
    const indexes = await sql<{ INDEX_NAME: string }>`SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'wp_ai_jobs'`.execute(handle.db)
    const names = indexes.rows.map((r) => r.INDEX_NAME)
    expect(names).toContain('fair_claim')
    expect(names).not.toContain('claim')
  })

  const walks: [string, string | undefined, string | undefined][] = [
    ['from the start', undefined, undefined], ['after an owner', 'u:17', undefined], ['wrapped around', 'u:3', 'u:41'],
  ]
  for (const [name, after, upTo] of walks) {
    for (const priority of [0, 1]) {
      it(`the owner walk reads fair_claim in order, no filesort, no full scan (${name}, priority ${priority})`, async () => {
        const compiled = ownerWalkQuery(handle.db, priority, after, upTo).compile()
        expect(compiled.sql).toMatch(/order by `owner_key`, `run_after`, `id` limit \?/i)
        expectIndexed(await explain(compiled), 'fair_claim')
      })
    }
  }

  it('the walk step reads at most OWNER_SCAN_ROWS entries and passes a deep queue in one step', async () => {
    const first = await ownerWalkQuery(handle.db, 0, undefined, undefined).execute()
    expect(first).toHaveLength(OWNER_SCAN_ROWS)
    // u:0 … u:49 sort before u:999: the hog shows up alone in a step of its own.
    const hog = await ownerWalkQuery(handle.db, 0, 'u:98', undefined).execute()
    expect(new Set(hog.map((r) => r.owner_key))).toEqual(new Set(['u:999']))
    expect(await ownerWalkQuery(handle.db, 0, 'u:999', undefined).execute()).toEqual([])
  })

  it('the batched walk (owners the last claims saw, one range each, in one statement) reads fair_claim ranges in order', async () => {
    const compiled = batchedWalkQuery(handle.db, 0, [undefined, 'u:1', 'u:11', 'u:999'], OWNER_SCAN_ROWS).compile(handle.db)
    expect(compiled.sql.match(/union all/gi)).toHaveLength(2)
    expect(compiled.sql).toMatch(/`wp_ai_jobs`/)
    const plan = await explain(compiled)
    // One step per branch (MariaDB needs no temporary table for UNION ALL), each on fair_claim.
    const branches = plan.filter((p) => p.table !== null && !String(p.table).startsWith('<union'))
    expect(branches).toHaveLength(3)
    for (const step of branches) expectIndexed([step], 'fair_claim')
    // The same entries as a sequential step over each range.
    const bounds = [undefined, 'u:1', 'u:11', 'u:999'] as const
    const rows = (await batchedWalkQuery(handle.db, 0, bounds, OWNER_SCAN_ROWS).execute(handle.db)).rows
    expect(rows.length).toBeGreaterThan(0)
    for (let i = 0; i < 3; i++) {
      const step = await ownerWalkQuery(handle.db, 0, bounds[i], bounds[i + 1]).execute()
      expect(rows.filter((r) => Number(r.branch) === i).map((r) => Number(r.id))).toEqual(step.map((r) => Number(r.id)))
    }
  })

  it('the running count per owner reads fair_claim ranges, no filesort, no temporary table', async () => {
    const compiled = runningByOwnerQuery(handle.db, ['u:1', 'u:7', 'u:999', 's:abcdefghijklmnop']).compile()
    expectIndexed(await explain(compiled), 'fair_claim')
  })

  it('the picked jobs are locked by primary key with SKIP LOCKED', async () => {
    const compiled = pickedJobsQuery(handle.db, [5, 84, 85, 20_001], NOW).forUpdate().skipLocked().compile()
    expect(compiled.sql).toMatch(/for update skip locked/i)
    expectIndexed(await explain(compiled), 'PRIMARY')
  })

  it("the owners' claim locks are rows taken by primary key", async () => {
    const compiled = claimLocksQuery(handle.db, [3, 17, 200]).forUpdate().compile()
    expect(compiled.sql).toMatch(/for update/i)
    expectIndexed(await explain(compiled), 'PRIMARY')
  })

  it('the claim UPDATE goes by primary key', async () => {
    const compiled = handle.db.updateTable('ai_jobs').set({ status: 'running' }).where('id', 'in', [84, 85, 86]).compile()
    expectIndexed(await explain(compiled), 'PRIMARY')
  })

  it('a whole claim reads a few hundred entries, not the queue, and takes the hog only up to the cap', async () => {
    const before = await handlerReads()
    const rotation = newClaimRotation()
    const rows = await claimJobs(handle, { limit: 16, nowMs: NOW, leaseOwner: 'explain', leaseMs: 60_000, ownerConcurrency: 4, rotation })
    const reads = (await handlerReads()) - before
    expect(rows.length).toBe(16)
    expect(reads).toBeLessThan(2_000)
    expect(reads).toBeLessThan(HOG_ROWS)
    const perOwner = new Map<string, number>()
    for (const r of rows) perOwner.set(r.owner_key, (perOwner.get(r.owner_key) ?? 0) + 1)
    // u:30 … u:33 run 200 jobs each (over the cap of 4); every other owner has nothing running.
    expect([...perOwner.keys()].filter((k) => ['u:30', 'u:31', 'u:32', 'u:33'].includes(k))).toEqual([])
    // Due interactive jobs: u:37, u:39, u:41, u:43, u:47, u:49 and the hog u:999 (u:35 and u:45 queue bulk
    // jobs, even owners wait for later runs). The 16 slots go round them in turn.
    expect([...perOwner.keys()].sort()).toEqual(['u:37', 'u:39', 'u:41', 'u:43', 'u:47', 'u:49', 'u:999'])
    expect(Math.max(...perOwner.values()) - Math.min(...perOwner.values())).toBeLessThanOrEqual(1)
    expect(rows.every((r) => r.priority === 0)).toBe(true)
    await handle.db.updateTable('ai_jobs').set({ status: 'pending', lease_owner: null, lease_expires_at: null }).where('lease_owner', '=', 'explain').execute()
  })

  it('later claims walk the owners the earlier ones saw in one statement, not one per owner', async () => {
    // Counts the statements a claim sends (plain SELECTs and the batched walk's raw statement).
    let statements = 0
    const counter: KyselyPlugin = {
      transformQuery: (args) => {
        if (SelectQueryNode.is(args.node) || RawNode.is(args.node)) statements++
        return args.node
      },
      transformResult: async (args) => args.result,
    }
    const counted = { ...handle, db: handle.db.withPlugin(counter) } as DatabaseHandle
    const rotation = newClaimRotation()
    const claim = async () => {
      statements = 0
      const rows = await claimJobs(counted, { limit: 4, nowMs: NOW, leaseOwner: 'batched', leaseMs: 60_000, ownerConcurrency: 0, rotation })
      return { rows, statements }
    }
    const first = await claim()
    expect(first.rows).toHaveLength(4)
    // Eight owners to choose among, each with a queue deeper than a step: a statement each.
    expect(first.statements).toBeGreaterThanOrEqual(8)
    // Once the claims have gone round every owner, the links name them all.
    const seen = new Set(first.rows.map((r) => Number(r.id)))
    for (let i = 0; i < 20; i++) for (const r of (await claim()).rows) seen.add(Number(r.id))
    for (let i = 0; i < 5; i++) {
      const later = await claim()
      expect(later.rows).toHaveLength(4)
      // The walk in one statement (and one more where it reaches the end of the index and wraps
      // round), the running count, the lock and the read of the claimed rows.
      expect(later.statements).toBeLessThanOrEqual(6)
      for (const r of later.rows) {
        expect(seen.has(Number(r.id))).toBe(false)
        seen.add(Number(r.id))
      }
    }
    await handle.db.updateTable('ai_jobs').set({ status: 'pending', lease_owner: null, lease_expires_at: null, attempts: 0 }).where('lease_owner', '=', 'batched').execute()
  })

  it('runs on connections set to READ COMMITTED, so the claim takes no gap locks', async () => {
    const r = await sql<{ Variable_name: string; Value: string }>`SHOW SESSION VARIABLES LIKE '%isolation'`.execute(handle.db)
    // `tx_isolation` on MariaDB (and MySQL 5.7), `transaction_isolation` on MySQL 8 and MariaDB 11.1+.
    const values = r.rows.filter((v) => /^(tx|transaction)_isolation$/.test(v.Variable_name)).map((v) => v.Value)
    expect(values.length).toBeGreaterThan(0)
    for (const v of values) expect(v).toBe('READ-COMMITTED')
  })
})
