import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import {
  cancelJob, claimJobs, FINISH_CHUNK, finishJobs, reapExpiredLeases, type FinishItem, type Outcome,
} from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { fromDbTime, toDbTime } from '../../src/db/time.js'
import { FinishBatcher } from '../../src/worker/finish-batcher.js'
import type { JobExecutor } from '../../src/worker/pool.js'
import { TestPool } from '../support/pool.js'
import { DIALECTS, freshDatabase } from '../helpers.js'
import { jobRow, seedJob } from '../support/job-seed.js'
import { RUN } from '../support/run-tag.js'

/**
 * Terminal outcomes are written in batches: finishJobs writes many rows in one fenced statement,
 * each with its own values, and the pool gathers the jobs that finish together into one call.
 */
const LEASE_MS = 30_000

function outcome(n: number, over: Partial<Outcome> = {}): Outcome {
  return { status: 'succeeded', resultJson: JSON.stringify({ output: `out ${n} 'quoted' "and" \\ back` }), errorText: null, providerMs: 10 + n, workerMs: 20 + n, inputTokens: n, outputTokens: 2 * n, ...over }
}

describe('FinishBatcher', () => {
  function recorder(fail?: (items: FinishItem[]) => boolean) {
    const batches: number[][] = []
    const singles: number[] = []
    const batcher = new FinishBatcher({
      writeBatch: async (items) => {
        batches.push(items.map((i) => i.id))
        if (fail?.(items)) throw new Error('batch refused')
        return new Set(items.filter((i) => i.id % 10 !== 9).map((i) => i.id))
      },
      writeOne: async (item) => {
        singles.push(item.id)
        if (item.outcome.errorText === 'poison') throw new Error('row refused')
        return item.id % 10 !== 9
      },
      maxItems: 4,
      maxChars: 1_000,
    })
    return { batcher, batches, singles }
  }

  it('writes the jobs finishing in the same moment together and answers each on its own', async () => {
    const { batcher, batches } = recorder()
    const answers = await Promise.all([1, 2, 9].map((id) => batcher.finish(id, outcome(id))))
    expect(batches).toEqual([[1, 2, 9]])
    // 9 stands for a row whose lease moved on.
    expect(answers).toEqual([true, true, false])
  })

  it('writes a full batch at once and the rest after', async () => {
    const { batcher, batches } = recorder()
    const all = [1, 2, 3, 4, 5, 6].map((id) => batcher.finish(id, outcome(id)))
    // The first four went out without waiting for the timer.
    expect(batches).toEqual([[1, 2, 3, 4]])
    await Promise.all(all)
    expect(batches).toEqual([[1, 2, 3, 4], [5, 6]])
  })

  it('keeps a batch under its text budget', async () => {
    const { batcher, batches } = recorder()
    const big = 'x'.repeat(600)
    await Promise.all([
      batcher.finish(1, outcome(1, { resultJson: big })),
      batcher.finish(2, outcome(2, { resultJson: big })),
      batcher.finish(3, outcome(3)),
    ])
    expect(batches).toEqual([[1], [2, 3]])
  })

  it('never names one job twice in a batch', async () => {
    const { batcher, batches } = recorder()
    await Promise.all([batcher.finish(1, outcome(1)), batcher.finish(1, outcome(1))])
    expect(batches).toEqual([[1], [1]])
  })

  it('after a failed batch writes each job alone, so a row the database refuses fails only its own job', async () => {
    const { batcher, batches, singles } = recorder((items) => items.length > 1)
    const results = await Promise.allSettled([
      batcher.finish(1, outcome(1)),
      batcher.finish(2, outcome(2, { status: 'failed', errorText: 'poison' })),
      batcher.finish(3, outcome(3)),
    ])
    expect(batches).toEqual([[1, 2, 3]])
    expect(singles).toEqual([1, 2, 3])
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled'])
    expect((results[1] as PromiseRejectedResult).reason.message).toBe('row refused')
  })

  it('hands a failed single-job batch its error (the caller retries as before)', async () => {
    const { batcher, singles } = recorder(() => true)
    await expect(batcher.finish(4, outcome(4))).rejects.toThrow('batch refused')
    expect(singles).toEqual([])
  })

  it('drain() writes what is queued and waits for it', async () => {
    const { batcher, batches } = recorder()
    let written: boolean | undefined
    void batcher.finish(7, outcome(7)).then((w) => {
      written = w
    })
    expect(batcher.pending).toBe(1)
    await batcher.drain()
    expect(batches).toEqual([[7]])
    expect(batcher.pending).toBe(0)
    await Promise.resolve()
    expect(written).toBe(true)
  })
})

/** Counts the UPDATEs a handle runs, and can make some of them fail. */
class StatementSpy implements KyselyPlugin {
  updates = 0
  failIf: ((sqlNode: string) => boolean) | undefined
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (args.node.kind === 'UpdateQueryNode') {
      this.updates++
      if (this.failIf?.(JSON.stringify(args.node))) throw Object.assign(new Error('injected failure'), { code: 'ECONNRESET' })
    }
    return args.node
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

describe.each(DIALECTS)('finishing jobs in batches (%s)', (dialect) => {
  let handle: DatabaseHandle
  let cleanup: () => Promise<void>
  let hour = 0
  // Each test works in its own hour, so rows left by one test are never due in another's claims.
  const slot = () => Date.parse('2026-05-01T00:00:00.000Z') + hour++ * 3_600_000

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_t3_finish_batch_${dialect}_${RUN}`)
    cleanup = db.cleanup
    // A prefix of its own: finishJobs' CASE expressions must not upset the TablePrefixPlugin.
    handle = await openDatabase({ url: db.url, prefix: 'fb_' })
    await runMigrations(handle)
  })

  afterAll(async () => {
    await handle?.close()
    await cleanup?.()
  })

  async function claimed(t: number, count: number, owner = 'w1') {
    await handle.db.deleteFrom('ai_jobs').execute()
    const seeded = []
    for (let i = 0; i < count; i++) seeded.push(await seedJob(handle, t))
    const rows = await claimJobs(handle, { limit: count, nowMs: t, leaseOwner: owner, leaseMs: LEASE_MS })
    expect(rows).toHaveLength(count)
    return rows
  }

  it('writes several outcomes at once, each row with its own values, and bumps each version by one', async () => {
    const t = slot()
    const rows = await claimed(t, 4)
    const items = rows.map((r, n) => ({
      id: r.id,
      outcome: n === 2 ? outcome(n, { status: 'failed', resultJson: null, errorText: `gave up on ${n}`, inputTokens: null, outputTokens: null }) : outcome(n),
    }))
    const written = await finishJobs(handle, 'w1', items, t + 1_234)
    expect([...written].sort((a, b) => a - b)).toEqual(rows.map((r) => r.id))
    for (const [n, r] of rows.entries()) {
      const o = items[n]!.outcome
      const after = await jobRow(handle, r.id)
      expect(after).toMatchObject({
        status: o.status, result_json: o.resultJson, error_text: o.errorText, provider_ms: o.providerMs, worker_ms: o.workerMs,
        input_tokens: o.inputTokens, output_tokens: o.outputTokens, lease_owner: null, lease_expires_at: null,
        attempts: 1, version: r.version + 1,
      })
      expect(fromDbTime(after.updated_at)).toBe(t + 1_234)
      // Columns finishJobs does not write stay as the claim left them.
      expect(after.started_at).toBe(r.started_at)
      expect(after.request_json).toBe(r.request_json)
    }
  })

  it('leaves a row canceled, or reaped and claimed by another worker, as it is and reports it not written', async () => {
    const t = slot()
    const [kept, canceled, reclaimed, alsoKept] = await claimed(t, 4)
    expect((await cancelJob(handle.db, canceled!.id, t + 10)).changed).toBe(true)
    // w1's lease on `reclaimed` runs out: the reaper puts it back and w2 claims it.
    await handle.db.updateTable('ai_jobs').set({ lease_expires_at: toDbTime(t) }).where('id', '=', reclaimed!.id).execute()
    expect(await reapExpiredLeases(handle.db, t + 20, { maxAttempts: 3, backoffMs: () => 0 })).toMatchObject({ requeued: 1, failed: 0 })
    const again = await claimJobs(handle, { limit: 10, nowMs: t + 30, leaseOwner: 'w2', leaseMs: LEASE_MS })
    expect(again.map((r) => r.id)).toEqual([reclaimed!.id])
    const canceledBefore = await jobRow(handle, canceled!.id)
    const reclaimedBefore = await jobRow(handle, reclaimed!.id)

    const all = [kept!, canceled!, reclaimed!, alsoKept!]
    const written = await finishJobs(handle, 'w1', all.map((r, n) => ({ id: r.id, outcome: outcome(n) })), t + 40)
    expect([...written].sort((a, b) => a - b)).toEqual([kept!.id, alsoKept!.id])

    expect(await jobRow(handle, canceled!.id)).toEqual(canceledBefore)
    expect(canceledBefore).toMatchObject({ status: 'canceled', result_json: null, version: canceled!.version + 1 })
    expect(await jobRow(handle, reclaimed!.id)).toEqual(reclaimedBefore)
    expect(reclaimedBefore).toMatchObject({ status: 'running', lease_owner: 'w2', attempts: 2, result_json: null })
    for (const r of [kept!, alsoKept!]) {
      expect(await jobRow(handle, r.id)).toMatchObject({ status: 'succeeded', lease_owner: null, version: r.version + 1 })
    }

    // The new owner writes its own result; w1 can no longer touch any of them.
    expect(await finishJobs(handle, 'w1', all.map((r, n) => ({ id: r.id, outcome: outcome(n + 10) })), t + 50)).toEqual(new Set())
    expect(await finishJobs(handle, 'w2', [{ id: reclaimed!.id, outcome: outcome(7) }, { id: kept!.id, outcome: outcome(8) }], t + 60)).toEqual(new Set([reclaimed!.id]))
    expect(await jobRow(handle, reclaimed!.id)).toMatchObject({ status: 'succeeded', result_json: outcome(7).resultJson, version: reclaimedBefore.version + 1 })
    expect((await jobRow(handle, kept!.id)).result_json).toBe(outcome(0).resultJson)
  })

  it('writes a single job, an empty list and a list longer than one statement takes', async () => {
    const t = slot()
    expect(await finishJobs(handle, 'w1', [], t)).toEqual(new Set())
    const rows = await claimed(t, FINISH_CHUNK + 7)
    const [first, ...rest] = rows
    expect(await finishJobs(handle, 'w1', [{ id: first!.id, outcome: outcome(1) }], t + 1)).toEqual(new Set([first!.id]))
    const written = await finishJobs(handle, 'w1', rest.map((r, n) => ({ id: r.id, outcome: outcome(n) })), t + 2)
    expect(written.size).toBe(rest.length)
    const stored = await handle.db.selectFrom('ai_jobs').select(['id', 'status', 'output_tokens', 'version']).orderBy('id').execute()
    expect(stored.every((r) => r.status === 'succeeded' && r.version === 3)).toBe(true)
    expect(stored.slice(1).map((r) => r.output_tokens)).toEqual(rest.map((_, n) => 2 * n))
  })

  it('refuses a list that names a job twice', async () => {
    const t = slot()
    const [r] = await claimed(t, 1)
    await expect(finishJobs(handle, 'w1', [{ id: r!.id, outcome: outcome(1) }, { id: r!.id, outcome: outcome(2) }], t)).rejects.toThrow(/twice/)
    expect((await jobRow(handle, r!.id)).status).toBe('running')
  })

  // Row locks are InnoDB's; SQLite has one writer at a time, so there is nothing to wait for there.
  // Registered for MySQL only, rather than reported as skipped on SQLite.
  const onMysql = (dialect === 'mysql' ? it : () => undefined) as typeof it
  onMysql('waits for a cancel in progress on one of its rows and then leaves that row alone', async () => {
    const t = slot()
    const rows = await claimed(t, 3)
    const target = rows[1]!
    let releaseCancel!: () => void
    const cancelHeld = new Promise<void>((resolve) => {
      releaseCancel = resolve
    })
    let cancelWritten!: () => void
    const cancelLocked = new Promise<void>((resolve) => {
      cancelWritten = resolve
    })
    // The cancel's transaction holds the row lock (not yet committed) while finishJobs starts.
    const cancel = handle.db.transaction().execute(async (trx) => {
      expect((await cancelJob(trx, target.id, t + 5)).changed).toBe(true)
      cancelWritten()
      await cancelHeld
    })
    await cancelLocked
    let finished = false
    const finishing = finishJobs(handle, 'w1', rows.map((r, n) => ({ id: r.id, outcome: outcome(n) })), t + 10).then((ids) => {
      finished = true
      return ids
    })
    await new Promise((resolve) => setTimeout(resolve, 200))
    // Blocked on the locked row rather than reading its old, still `running`, version.
    expect(finished).toBe(false)
    releaseCancel()
    await cancel
    expect(await finishing).toEqual(new Set([rows[0]!.id, rows[2]!.id]))
    expect(await jobRow(handle, target.id)).toMatchObject({ status: 'canceled', result_json: null, version: target.version + 1 })
  })

  describe('in the pool', () => {
    function poolWith(spy: StatementSpy, execute: JobExecutor, onChange: (id: number) => void = () => {}) {
      const clock = manualClock(slot())
      const spied: DatabaseHandle = { ...handle, db: handle.db.withPlugin(spy) }
      const pool = new TestPool({
        handle: spied, clock, execute, onChange,
        concurrency: 16, leaseMs: LEASE_MS, maxAttempts: 3, pollMs: 3_600_000, reapEveryMs: 3_600_000,
      })
      return { pool, clock }
    }
    const echo: JobExecutor = async (row) => ({ kind: 'finish', outcome: outcome(row.id) })

    async function seed(now: number, count: number): Promise<number[]> {
      await handle.db.deleteFrom('ai_jobs').execute()
      const ids = []
      for (let i = 0; i < count; i++) ids.push((await seedJob(handle, now)).id)
      return ids
    }

    it('writes the jobs of one claim with one UPDATE, and runOnce() returns once they are written', async () => {
      const spy = new StatementSpy()
      const changed: number[] = []
      const { pool, clock } = poolWith(spy, echo, (id) => changed.push(id))
      const ids = await seed(clock.now(), 6)
      expect(await pool.runOnce()).toBe(6)
      // One for the claim, one for the six results.
      expect(spy.updates).toBe(2)
      for (const id of ids) expect(await jobRow(handle, id)).toMatchObject({ status: 'succeeded', result_json: outcome(id).resultJson, lease_owner: null, attempts: 1 })
      expect(changed.sort((a, b) => a - b)).toEqual(ids)
    })

    it('does not overwrite a job canceled while it ran, and reports only the jobs it wrote', async () => {
      const spy = new StatementSpy()
      const changed: number[] = []
      let victim = 0
      // The cancel reaches the database, but not this pool: its executor finishes anyway.
      const { pool, clock } = poolWith(spy, async (row) => {
        if (row.id === victim) await cancelJob(handle.db, row.id, clock.now())
        return { kind: 'finish', outcome: outcome(row.id) }
      }, (id) => changed.push(id))
      const ids = await seed(clock.now(), 3)
      victim = ids[1]!
      expect(await pool.runOnce()).toBe(3)
      expect(await jobRow(handle, victim)).toMatchObject({ status: 'canceled', result_json: null })
      expect(changed.sort((a, b) => a - b)).toEqual([ids[0], ids[2]])
    })

    it('loses no result when the batch write fails: each job is written on its own', async () => {
      const spy = new StatementSpy()
      const { pool, clock } = poolWith(spy, echo)
      const ids = await seed(clock.now(), 4)
      // The claim is the first UPDATE; the batch (the second) fails once.
      spy.failIf = () => spy.updates === 2
      expect(await pool.runOnce()).toBe(4)
      for (const id of ids) expect(await jobRow(handle, id)).toMatchObject({ status: 'succeeded', result_json: outcome(id).resultJson })
      // Claim, failed batch, then one UPDATE per job.
      expect(spy.updates).toBe(2 + ids.length)
    })

    it('a row the database keeps refusing costs only its own result, which the reaper later returns', async () => {
      const spy = new StatementSpy()
      const { pool, clock } = poolWith(spy, async (row) => ({ kind: 'finish', outcome: outcome(row.id, { errorText: row.id === poisoned ? 'poison' : null }) }))
      const ids = await seed(clock.now(), 3)
      const poisoned = ids[0]!
      spy.failIf = (node) => node.includes('"poison"')
      expect(await pool.runOnce()).toBe(3)
      expect(await jobRow(handle, poisoned)).toMatchObject({ status: 'running', lease_owner: pool.workerId, result_json: null })
      for (const id of ids.slice(1)) expect(await jobRow(handle, id)).toMatchObject({ status: 'succeeded' })
    })

    it('stop() returns only once every finished job is written', async () => {
      const spy = new StatementSpy()
      const { pool, clock } = poolWith(spy, async (row) => {
        await new Promise((resolve) => setTimeout(resolve, 50))
        return { kind: 'finish', outcome: outcome(row.id) }
      })
      const ids = await seed(clock.now(), 5)
      pool.start()
      while (pool.size < ids.length) await new Promise((resolve) => setTimeout(resolve, 5))
      await pool.stop(10_000)
      for (const id of ids) expect(await jobRow(handle, id)).toMatchObject({ status: 'succeeded', attempts: 1 })
      expect(pool.size).toBe(0)
    })
  })
})
