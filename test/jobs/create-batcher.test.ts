/**
 * Creates arriving together are written as one multi-row INSERT (one statement, one commit), each
 * still answered with its own id or its own error, on MariaDB and SQLite.
 */
import { randomBytes } from 'node:crypto'
import type { CompiledQuery } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { findJob, insertJobs, isDuplicateKey, type NewJobRow } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { toDbTime } from '../../src/db/time.js'
import { CreateBatcher, createBatcherFor } from '../../src/jobs/create-batcher.js'
import { DIALECTS, freshDatabase } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

/** The handle with every INSERT statement it executes counted (creates run compiled statements). */
function countingInserts(handle: DatabaseHandle): { handle: DatabaseHandle; count: () => number } {
  let inserts = 0
  const db = new Proxy(handle.db, {
    get(target, property) {
      if (property === 'executeQuery') {
        return (query: CompiledQuery) => {
          if (/^\s*INSERT/i.test(query.sql)) inserts++
          return target.executeQuery(query)
        }
      }
      const value = Reflect.get(target, property) as unknown
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value
    },
  })
  return { handle: { ...handle, db }, count: () => inserts }
}

function newRow(overrides: Partial<NewJobRow> = {}): NewJobRow {
  const at = toDbTime(Date.now())
  return {
    user_id: 3, owner_key: 'u:3', status: 'pending', input_hash: randomBytes(32).toString('hex'),
    request_json: JSON.stringify({ model: 'echo', input: `batched ${randomBytes(4).toString('hex')}`, params: {} }),
    idempotency_key: randomBytes(32).toString('hex'), model: 'echo', request_id: 'r', created_at: at, updated_at: at, run_after: at,
    ...overrides,
  }
}

describe.each(DIALECTS)('create batching (%s)', (dialect) => {
  let handle: DatabaseHandle
  let spied: ReturnType<typeof countingInserts>
  let cleanup: () => Promise<void>

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_create_batch_${dialect}_${RUN}`)
    cleanup = db.cleanup
    handle = await openDatabase({ url: db.url, prefix: 'wp_' })
    await runMigrations(handle)
    spied = countingInserts(handle)
  })
  afterAll(async () => {
    await handle?.close()
    await cleanup?.()
  })

  it('insertJobs writes many rows in one statement and maps each idempotency key to its id', async () => {
    const rows = Array.from({ length: 25 }, () => newRow())
    const before = spied.count()
    const ids = await insertJobs(spied.handle, rows)
    expect(spied.count() - before).toBe(1)
    expect(ids.size).toBe(25)
    expect(new Set(ids.values()).size).toBe(25)
    for (const row of rows) {
      const stored = await findJob(handle.db, ids.get(row.idempotency_key)!)
      expect(stored?.idempotency_key).toBe(row.idempotency_key)
      expect(stored?.request_json).toBe(row.request_json)
    }
  })

  it('insertJobs writes nothing when one row is refused', async () => {
    const existing = newRow()
    await insertJobs(handle, [existing])
    const rows = [newRow(), { ...newRow(), idempotency_key: existing.idempotency_key }, newRow()]
    await expect(insertJobs(handle, rows)).rejects.toSatisfy(isDuplicateKey)
    for (const r of [rows[0]!, rows[2]!]) {
      const found = await handle.db.selectFrom('ai_jobs').select('id').where('idempotency_key', '=', r.idempotency_key).executeTakeFirst()
      expect(found).toBeUndefined()
    }
  })

  it('gathers creates that arrive while a batch commits into the next one', async () => {
    const batcher = createBatcherFor(spied.handle, { maxInFlight: 1 })
    const before = spied.count()
    const rows = Array.from({ length: 60 }, () => newRow())
    const ids = await Promise.all(rows.map((r) => batcher.insert(r)))
    expect(new Set(ids).size).toBe(60)
    // The first create is written alone at once; the 59 behind it share the next statement or two.
    const statements = spied.count() - before
    expect(statements).toBeGreaterThanOrEqual(2)
    expect(statements).toBeLessThanOrEqual(3)
    for (const [i, row] of rows.entries()) expect((await findJob(handle.db, ids[i]!))?.idempotency_key).toBe(row.idempotency_key)
  })

  it('two creates with one stored key in one batch make one row: the second gets the duplicate-key error', async () => {
    const batcher = createBatcherFor(handle, { maxInFlight: 1 })
    const blocker = batcher.insert(newRow())
    const shared = newRow()
    const first = batcher.insert(shared)
    const second = batcher.insert({ ...shared, request_id: 'the retry' })
    const other = batcher.insert(newRow())
    await blocker
    const id = await first
    await expect(second).rejects.toSatisfy(isDuplicateKey)
    expect(await other).toBeGreaterThan(0)
    expect((await findJob(handle.db, id))?.request_id).toBe('r')
    const copies = await handle.db.selectFrom('ai_jobs').select('id').where('idempotency_key', '=', shared.idempotency_key).execute()
    expect(copies).toHaveLength(1)
  })

  it('a batch the database refuses is written row by row: only the refused rows fail', async () => {
    const existing = newRow()
    await insertJobs(handle, [existing])
    let batches = 0
    const batcher = new CreateBatcher({
      maxInFlight: 1,
      writeBatch: async (rows) => {
        batches++
        return insertJobs(handle, rows)
      },
      writeOne: (row) => insertJobs(handle, [row]).then((ids) => ids.get(row.idempotency_key)!),
    })
    const blocker = batcher.insert(newRow())
    const good = [newRow(), newRow()]
    const results = await Promise.allSettled([
      batcher.insert(good[0]!),
      batcher.insert({ ...newRow(), idempotency_key: existing.idempotency_key }),
      batcher.insert({ ...newRow(), status: 'bogus' as never }),
      batcher.insert(good[1]!),
    ])
    await blocker
    expect(batches).toBe(1)
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled'])
    expect(isDuplicateKey((results[1] as PromiseRejectedResult).reason)).toBe(true)
    for (const [i, r] of [results[0], results[3]].entries()) {
      expect((await findJob(handle.db, (r as PromiseFulfilledResult<number>).value))?.idempotency_key).toBe(good[i]!.idempotency_key)
    }
  })
})
