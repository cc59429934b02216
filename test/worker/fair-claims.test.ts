import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest'
import { manualClock, systemClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { claimJobs, claimLockOf, claimLocksQuery, findJob, insertJobs, markDispatched, newClaimRotation, OWNER_SCAN_ROWS, type JobRow, type NewJobRow } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { JOB_PRIORITY } from '../../src/db/schema.js'
import { toDbTime } from '../../src/db/time.js'
import type { JobDecision, JobExecutor } from '../../src/worker/pool.js'
import { bearer, buildTestApp, DIALECTS, freshDatabase, waitFor, type Dialect } from '../helpers.js'
import { TestPool } from '../support/pool.js'
import { RUN } from '../support/run-tag.js'

/**
 * Fair claims (SPEC §8): owners take turns, an owner with nothing running goes first,
 * JOB_OWNER_CONCURRENCY caps an owner's running jobs across replicas (dispatched jobs count),
 * and bulk jobs wait while an interactive job is due.
 */
const NOW = Date.parse('2026-03-01T12:00:00.000Z')

const succeeded: JobDecision = {
  kind: 'finish',
  outcome: { status: 'succeeded', resultJson: '{"output":"ok"}', errorText: null, providerMs: 1, workerMs: 1, inputTokens: 1, outputTokens: 1 },
}

/** Queues `n` due jobs of one owner in one multi-row INSERT, in id order. */
async function queue(handle: DatabaseHandle, ownerKey: string, n: number, options: { priority?: number; atMs?: number } = {}): Promise<number[]> {
  const at = toDbTime(options.atMs ?? NOW)
  const rows: NewJobRow[] = Array.from({ length: n }, (_, i) => ({
    user_id: ownerKey.startsWith('u:') ? Number(ownerKey.slice(2)) : 0,
    owner_key: ownerKey,
    status: 'pending',
    input_hash: randomBytes(32).toString('hex'),
    request_json: JSON.stringify({ model: 'echo', input: `${ownerKey} ${i}`, params: {} }),
    idempotency_key: randomBytes(32).toString('hex'),
    model: 'echo',
    request_id: `fair-${i}`,
    created_at: at,
    updated_at: at,
    run_after: at,
    priority: options.priority ?? JOB_PRIORITY.interactive,
  }))
  const ids: number[] = []
  for (let i = 0; i < rows.length; i += 100) {
    const chunk = rows.slice(i, i + 100)
    const byKey = await insertJobs(handle, chunk)
    for (const r of chunk) ids.push(byKey.get(r.idempotency_key)!)
  }
  return ids
}

async function openFresh(dialect: Dialect, name: string): Promise<{ handle: DatabaseHandle; url: string; cleanup: () => Promise<void> }> {
  const db = await freshDatabase(dialect, name)
  const handle = await openDatabase({ url: db.url, prefix: 'wp_' })
  await runMigrations(handle, () => NOW)
  return { handle, url: db.url, cleanup: async () => { await handle.close(); await db.cleanup() } }
}

/** Runs claims of `slots` through a pool until the queue is empty; returns the owner of each job in the order they ran. */
async function drain(handle: DatabaseHandle, options: { slots: number; ownerConcurrency: number }): Promise<JobRow[]> {
  const ran: JobRow[] = []
  const execute: JobExecutor = async (row) => {
    ran.push(row)
    return succeeded
  }
  const pool = new TestPool({ handle, clock: manualClock(NOW + 1_000), execute, concurrency: options.slots, ownerConcurrency: options.ownerConcurrency, leaseMs: 60_000, maxAttempts: 3 })
  while ((await pool.runOnce()) > 0) { /* claim after claim */ }
  return ran
}

describe.each(DIALECTS)('fair claims (%s)', (dialect) => {
  let db: Awaited<ReturnType<typeof openFresh>>
  let n = 0
  beforeEach(async () => {
    db = await openFresh(dialect, `gw_fair_claims_${dialect}_${n++}_${RUN}`)
  })
  afterEach(async () => {
    await db?.cleanup()
  })

  for (const cap of [4, 0]) {
    it(`5 jobs queued behind another owner's 200 all run before half of those (JOB_OWNER_CONCURRENCY=${cap})`, async () => {
      await queue(db.handle, 'u:1', 200)
      const late = await queue(db.handle, 'u:2', 5, { atMs: NOW + 1 })
      const ran = await drain(db.handle, { slots: 4, ownerConcurrency: cap })
      expect(ran).toHaveLength(205)
      expect(new Set(ran.map((r) => Number(r.id))).size).toBe(205)
      const lastLate = Math.max(...late.map((id) => ran.findIndex((r) => Number(r.id) === id)))
      const firstOwnerBefore = ran.slice(0, lastLate).filter((r) => r.owner_key === 'u:1').length
      expect(firstOwnerBefore).toBeLessThan(100)
      // Each owner's own jobs still run oldest first.
      const own = ran.filter((r) => r.owner_key === 'u:1').map((r) => Number(r.id))
      expect(own).toEqual([...own].sort((a, b) => a - b))
    })
  }

  it('a claim goes round the owners in turn, the walk wrapping past its start, before any owner gets a second job', async () => {
    // More owners than one walk step holds, three jobs each.
    const owners = Array.from({ length: OWNER_SCAN_ROWS + 18 }, (_, i) => `u:${100 + i}`)
    for (const o of owners) await queue(db.handle, o, 3)
    const ran = await drain(db.handle, { slots: 8, ownerConcurrency: 4 })
    expect(ran).toHaveLength(owners.length * 3)
    const firstRound = ran.slice(0, owners.length).map((r) => r.owner_key)
    expect(new Set(firstRound).size).toBe(owners.length)
    const secondRound = ran.slice(owners.length, 2 * owners.length).map((r) => r.owner_key)
    expect(new Set(secondRound).size).toBe(owners.length)
  })

  it('an owner with nothing running goes before the next job of an owner with jobs running', async () => {
    await queue(db.handle, 'u:1', 10)
    await queue(db.handle, 'u:2', 10, { atMs: NOW + 1 })
    const rotation = newClaimRotation()
    const claim = (limit: number) => claimJobs(db.handle, { limit, nowMs: NOW + 10, leaseOwner: 'w', leaseMs: 60_000, ownerConcurrency: 4, rotation })
    // u:1 gets three running jobs …
    const first = await claim(3)
    expect(first.map((r) => r.owner_key)).toEqual(['u:1', 'u:2', 'u:1'])
    // … so with u:1 at 2 running and u:2 at 1, the next slot is u:2's, then they alternate.
    const next = await claim(3)
    expect(next.map((r) => r.owner_key)).toEqual(['u:2', 'u:1', 'u:2'])
    const late = await queue(db.handle, 'u:3', 1, { atMs: NOW + 5 })
    const third = await claim(1)
    expect(third.map((r) => Number(r.id))).toEqual(late)
  })

  it('JOB_OWNER_CONCURRENCY caps one owner however many slots are free; 0 means no cap', async () => {
    await queue(db.handle, 'u:1', 20)
    const claim = (limit: number, cap: number, leaseOwner: string) => claimJobs(db.handle, { limit, nowMs: NOW + 10, leaseOwner, leaseMs: 60_000, ownerConcurrency: cap })
    expect(await claim(16, 3, 'a')).toHaveLength(3)
    // Another worker sees the same three running: nothing more for u:1.
    expect(await claim(16, 3, 'b')).toHaveLength(0)
    expect(await claim(16, 0, 'c')).toHaveLength(16)
  })

  it('a dispatched job (external mode) counts against the cap until its webhook', async () => {
    await queue(db.handle, 'u:1', 3)
    const other = await queue(db.handle, 'u:2', 1, { atMs: NOW + 1 })
    const claim = (limit: number) => claimJobs(db.handle, { limit, nowMs: NOW + 10, leaseOwner: 'gw', leaseMs: 2_000, dispatch: true, ownerConcurrency: 1 })
    const [sent, second] = await claim(2)
    expect(sent!.owner_key).toBe('u:1')
    expect(Number(second!.id)).toBe(other[0])
    // The worker accepted it: it stays `running`, waiting for its webhook.
    expect(await markDispatched(db.handle.db, Number(sent!.id), 'gw', NOW + 20, 300_000)).toBe(true)
    expect((await findJob(db.handle.db, Number(sent!.id)))?.status).toBe('running')
    expect(await claim(4)).toHaveLength(0)
    // The webhook ends it: u:1's next job may go.
    await db.handle.db.updateTable('ai_jobs').set({ status: 'succeeded', lease_owner: null, lease_expires_at: null }).where('id', '=', Number(sent!.id)).execute()
    const after = await claim(4)
    expect(after.map((r) => r.owner_key)).toEqual(['u:1'])
  })

  it('an interactive job created after many bulk jobs runs before most of them', async () => {
    await queue(db.handle, 'u:1', 30, { priority: JOB_PRIORITY.bulk })
    await queue(db.handle, 'u:2', 30, { priority: JOB_PRIORITY.bulk })
    const [interactive] = await queue(db.handle, 'u:1', 1, { atMs: NOW + 5 })
    const ran = await drain(db.handle, { slots: 4, ownerConcurrency: 4 })
    expect(ran).toHaveLength(61)
    expect(ran.findIndex((r) => Number(r.id) === interactive)).toBe(0)
  })

  it('bulk jobs wait while an interactive job is due, and run beside interactive owners at their cap', async () => {
    await queue(db.handle, 'u:2', 5, { priority: JOB_PRIORITY.bulk })
    await queue(db.handle, 'u:1', 10, { atMs: NOW + 1 })
    const claim = (limit: number, leaseOwner: string) => claimJobs(db.handle, { limit, nowMs: NOW + 10, leaseOwner, leaseMs: 60_000, ownerConcurrency: 2 })
    // u:1's interactive jobs are due and it is under the cap: no bulk job yet.
    expect((await claim(1, 'a')).map((r) => [r.owner_key, r.priority])).toEqual([['u:1', 0]])
    // u:1 reaches its cap of 2; its other interactive jobs are not due for a claim, so bulk jobs fill the rest.
    const rest = await claim(4, 'b')
    expect(rest.map((r) => [r.owner_key, r.priority])).toEqual([['u:1', 0], ['u:2', 1], ['u:2', 1]])
  })
})

describe.each(DIALECTS)('priority through the API (%s)', (dialect) => {
  it('POST /jobs with priority bulk stores priority 1, without it 0, and the pool runs the interactive job first', async () => {
    const clock = manualClock(Date.now())
    const t = await buildTestApp({ dialect, name: `gw_fair_api_${dialect}_${RUN}`, clock, env: { RATE_LIMIT_MAX: '1000' } })
    try {
      const headers = await bearer({ sub: '7' }, { nowMs: clock.now() })
      const create = async (payload: Record<string, unknown>) => {
        const r = await t.app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers, payload })
        expect(r.statusCode).toBe(202)
        return r.json().job_id as number
      }
      const bulk: number[] = []
      for (let i = 0; i < 12; i++) bulk.push(await create({ input: `bulk ${i}`, priority: 'bulk' }))
      const interactive = await create({ input: 'now please', priority: 'interactive' })
      const plain = await create({ input: 'also now' })
      const priorities = await t.app.db.db.selectFrom('ai_jobs').select(['id', 'priority']).orderBy('id').execute()
      expect(priorities.map((r) => Number(r.priority))).toEqual([...bulk.map(() => 1), 0, 0])
      // Default WORKER_CONCURRENCY (8), JOB_OWNER_CONCURRENCY (4): the first claim takes the two interactive jobs, then bulk up to the cap.
      const ran: number[] = []
      expect(priorities).toHaveLength(14)
      expect(await t.app.pool.runOnce()).toBe(4)
      const done = await t.app.db.db.selectFrom('ai_jobs').select('id').where('status', '=', 'succeeded').execute()
      ran.push(...done.map((r) => Number(r.id)))
      expect(ran).toContain(interactive)
      expect(ran).toContain(plain)
      expect(ran.filter((id) => bulk.includes(id))).toHaveLength(2)
    } finally {
      await t.close()
    }
  })
})

describe('two replicas on one MariaDB database', () => {
  const name = `gw_fair_replicas_${RUN}`
  let a: DatabaseHandle | undefined
  let b: DatabaseHandle | undefined
  let cleanup: (() => Promise<void>) | undefined
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await cleanup?.()
  })

  it("a claim waits for another replica's claim of the same owner and counts what it took", async () => {
    const db = await freshDatabase('mysql', `${name}_race`)
    const one = await openDatabase({ url: db.url, prefix: 'wp_' })
    const two = await openDatabase({ url: db.url, prefix: 'wp_' })
    try {
      await runMigrations(one, () => NOW)
      const ids = await queue(one, 'u:1', 6)
      let claimed: JobRow[] | undefined
      await one.db.transaction().execute(async (trx) => {
        // Replica one is mid-claim: it holds u:1's claim lock and has taken jobs 3 and 4, not yet committed.
        await claimLocksQuery(trx, [claimLockOf('u:1')]).forUpdate().execute()
        await trx.updateTable('ai_jobs').set({ status: 'running', lease_owner: 'one', lease_expires_at: toDbTime(NOW + 60_000) }).where('id', 'in', ids.slice(2, 4)).execute()
        // Replica two plans from what is committed (u:1 has nothing running) and picks jobs 1 and 2.
        const two$ = claimJobs(two, { limit: 4, nowMs: NOW + 10, leaseOwner: 'two', leaseMs: 60_000, ownerConcurrency: 2 }).then((rows) => { claimed = rows })
        await new Promise((r) => setTimeout(r, 300))
        // Still waiting on the lock: it has claimed nothing yet.
        expect(claimed).toBeUndefined()
        void two$
      })
      await waitFor(() => claimed, 10_000, 'the second claim')
      // Counted again after the first claim committed: u:1 is at its cap.
      expect(claimed).toEqual([])
      const running = await one.db.selectFrom('ai_jobs').select('id').where('status', '=', 'running').execute()
      expect(running.map((r) => Number(r.id)).sort((x, y) => x - y)).toEqual(ids.slice(2, 4))
    } finally {
      await one.close()
      await two.close()
      await db.cleanup()
    }
  })

  it('with JOB_OWNER_CONCURRENCY=2 no owner ever has more than 2 running across both', async () => {
    const db = await freshDatabase('mysql', name)
    cleanup = db.cleanup
    a = await openDatabase({ url: db.url, prefix: 'wp_' })
    b = await openDatabase({ url: db.url, prefix: 'wp_' })
    await runMigrations(a, () => NOW)
    const owners = ['u:1', 'u:2', 'u:3']
    for (const o of owners) await queue(a, o, 40, { atMs: Date.now() - 60_000 })

    let most = 0
    const seen: number[] = []
    const runningNow = async (handle: DatabaseHandle, ownerKey: string) =>
      Number((await handle.db.selectFrom('ai_jobs').select(sql<number>`COUNT(*)`.as('n')).where('status', '=', 'running').where('owner_key', '=', ownerKey).executeTakeFirst())?.n ?? 0)
    const perReplica = [0, 0]
    const executor = (handle: DatabaseHandle, replica: number): JobExecutor => async (row) => {
      perReplica[replica]!++
      // Recorded at each claim, from the database: this job's owner as every replica sees it.
      const n = await runningNow(handle, row.owner_key)
      seen.push(n)
      most = Math.max(most, n)
      await new Promise((r) => setTimeout(r, 2 + Math.floor(Math.random() * 8)))
      return succeeded
    }
    const pools = [a, b].map((handle, replica) => new TestPool({
      handle, clock: systemClock, execute: executor(handle, replica), concurrency: 8, ownerConcurrency: 2, leaseMs: 60_000, maxAttempts: 3, pollMs: 10,
    }))
    // And sampled apart from the claims, per owner, until the queue is empty.
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const rows = await a!.db.selectFrom('ai_jobs').select(['owner_key', sql<number>`COUNT(*)`.as('n')]).where('status', '=', 'running').groupBy('owner_key').execute()
        for (const r of rows) most = Math.max(most, Number(r.n))
        await new Promise((r) => setTimeout(r, 2))
      }
    })()
    for (const p of pools) p.start()
    try {
      await waitFor(async () => {
        const left = await a!.db.selectFrom('ai_jobs').select(sql<number>`COUNT(*)`.as('n')).where('status', '!=', 'succeeded').executeTakeFirst()
        return Number(left?.n) === 0 ? true : undefined
      }, 60_000, 'every job to succeed')
    } finally {
      sampling = false
      await sampler
      for (const p of pools) await p.stop(5_000)
    }
    expect(seen).toHaveLength(120)
    expect(most).toBeLessThanOrEqual(2)
    // The cap was reached, so the check above could have failed.
    expect(seen.filter((n) => n === 2).length).toBeGreaterThan(0)
    // Both replicas took part.
    expect(perReplica[0]).toBeGreaterThan(0)
    expect(perReplica[1]).toBeGreaterThan(0)
    expect(perReplica[0]! + perReplica[1]!).toBe(120)
  }, 90_000)
})
