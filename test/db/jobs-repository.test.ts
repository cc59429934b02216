import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import {
  cancelJob, claimJobs, finishJob, isLockConflict, LOCK_CONFLICT_TRIES, reapExpiredLeases, renewLeases,
  requeueJob, retryOnLockConflict, type Outcome,
} from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { fromDbTime } from '../../src/db/time.js'
import { DIALECTS, freshDatabase } from '../helpers.js'
import { jobRow, seedJob } from '../support/job-seed.js'
import { RUN } from '../support/run-tag.js'

const LEASE_MS = 30_000
const succeeded: Outcome = { status: 'succeeded', resultJson: '{"output":"ok"}', errorText: null, providerMs: 5, workerMs: 6, inputTokens: 1, outputTokens: 1 }

describe('retryOnLockConflict', () => {
  const conflict = (errno: number) => Object.assign(new Error(errno === 1213 ? 'Deadlock found when trying to get lock' : 'Lock wait timeout exceeded'), { errno })

  it('runs the transaction again after a deadlock (1213) and a lock wait timeout (1205), with jittered waits', async () => {
    const waits: number[] = []
    const errors = [conflict(1213), conflict(1205)]
    let calls = 0
    const value = await retryOnLockConflict(async () => {
      calls++
      const e = errors.shift()
      if (e) throw e
      return 'claimed'
    }, () => 0.5, async (ms) => {
      waits.push(ms)
    })
    expect(value).toBe('claimed')
    expect(calls).toBe(3)
    // Full jitter: random × 10 ms × 2^n, so 0.5 gives half of each ceiling (20 ms, 40 ms).
    expect(waits).toEqual([10, 20])
  })

  it('recognises conflicts by errno or by mysql2 code, and nothing else', () => {
    expect(isLockConflict({ errno: 1213 })).toBe(true)
    expect(isLockConflict({ errno: 1205 })).toBe(true)
    expect(isLockConflict({ code: 'ER_LOCK_DEADLOCK' })).toBe(true)
    expect(isLockConflict({ code: 'ER_LOCK_WAIT_TIMEOUT' })).toBe(true)
    expect(isLockConflict({ errno: 1062, code: 'ER_DUP_ENTRY' })).toBe(false)
    expect(isLockConflict(null)).toBe(false)
    expect(isLockConflict(new Error('Deadlock'))).toBe(false)
  })

  it('throws any other error at once', async () => {
    let calls = 0
    const dup = Object.assign(new Error('Duplicate entry'), { errno: 1062 })
    await expect(retryOnLockConflict(async () => {
      calls++
      throw dup
    }, () => 0, async () => {})).rejects.toBe(dup)
    expect(calls).toBe(1)
  })

  it(`gives up after ${LOCK_CONFLICT_TRIES} tries and throws the last conflict`, async () => {
    const waits: number[] = []
    let calls = 0
    const last = conflict(1213)
    await expect(retryOnLockConflict(async () => {
      calls++
      throw calls === LOCK_CONFLICT_TRIES ? last : conflict(1213)
    }, () => 0.999, async (ms) => {
      waits.push(ms)
    })).rejects.toBe(last)
    expect(calls).toBe(LOCK_CONFLICT_TRIES)
    expect(waits).toEqual([19, 39, 79, 159])
  })
})

describe.each(DIALECTS)('claims, leases, fences and the reaper (%s)', (dialect) => {
  let handle: DatabaseHandle
  let cleanup: () => Promise<void>
  // Each test works in its own hour, so rows left by one test are never due in another's claims.
  let hour = 0
  const slot = () => Date.parse('2026-04-01T00:00:00.000Z') + hour++ * 3_600_000

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_t3_leases_${dialect}_${RUN}`)
    cleanup = db.cleanup
    handle = await openDatabase({ url: db.url, prefix: 'wp_' })
    await runMigrations(handle)
  })

  afterAll(async () => {
    await handle?.close()
    await cleanup?.()
  })

  /** Each test starts from an empty table. */
  async function drain(_now: number): Promise<void> {
    await handle.db.deleteFrom('ai_jobs').execute()
  }

  it('claims due jobs oldest first, up to the limit, and counts the claim as an attempt', async () => {
    const t = slot()
    await drain(t + 3_000_000)
    const a = await seedJob(handle, t, { run_after: '2026-01-01 00:00:00.000' })
    const b = await seedJob(handle, t)
    const later = await seedJob(handle, t, { run_after: '2027-01-01 00:00:00.000' })
    const c = await seedJob(handle, t)

    const rows = await claimJobs(handle, { limit: 2, nowMs: t + 1_000, leaseOwner: 'w1', leaseMs: LEASE_MS })
    expect(rows.map((r) => r.id)).toEqual([a.id, b.id])
    for (const r of rows) {
      expect(r.status).toBe('running')
      expect(r.attempts).toBe(1)
      expect(r.lease_owner).toBe('w1')
      expect(fromDbTime(r.lease_expires_at!)).toBe(t + 1_000 + LEASE_MS)
      expect(r.version).toBe(2)
    }
    const next = await claimJobs(handle, { limit: 10, nowMs: t + 1_000, leaseOwner: 'w2', leaseMs: LEASE_MS })
    expect(next.map((r) => r.id)).toEqual([c.id])
    expect((await jobRow(handle, later.id)).status).toBe('pending')
  })

  it('gives concurrent claimers disjoint batches that together cover every due job', async () => {
    const t = slot()
    await drain(t)
    const seeded = []
    for (let i = 0; i < 60; i++) seeded.push((await seedJob(handle, t)).id)
    const batches = await Promise.all(Array.from({ length: 6 }, (_, w) =>
      (async () => {
        const mine: number[] = []
        for (;;) {
          const rows = await claimJobs(handle, { limit: 4, nowMs: t, leaseOwner: `w${w}`, leaseMs: LEASE_MS })
          if (rows.length === 0) return mine
          mine.push(...rows.map((r) => r.id))
        }
      })()))
    const all = batches.flat()
    expect(new Set(all).size).toBe(all.length)
    expect([...all].sort((x, y) => x - y)).toEqual(seeded)
    const rows = await handle.db.selectFrom('ai_jobs').select(['id', 'attempts', 'lease_owner']).where('id', 'in', seeded).execute()
    for (const r of rows) expect(r.attempts).toBe(1)
    // Every row's lease owner is the claimer that returned it.
    const owner = new Map(batches.flatMap((ids, w) => ids.map((id) => [id, `w${w}`] as const)))
    for (const r of rows) expect(r.lease_owner).toBe(owner.get(Number(r.id)))
  })

  it('fences every write after the claim on the status and the lease owner', async () => {
    const t = slot()
    await drain(t)
    const job = await seedJob(handle, t)
    const [claimed] = await claimJobs(handle, { limit: 1, nowMs: t, leaseOwner: 'w1', leaseMs: LEASE_MS })
    expect(claimed?.id).toBe(job.id)

    expect(await finishJob(handle.db, job.id, 'someone-else', succeeded, t)).toBe(false)
    expect(await requeueJob(handle.db, job.id, 'someone-else', { runAfterMs: t, errorText: null, refundAttempt: true }, t)).toBe(false)
    expect((await jobRow(handle, job.id)).status).toBe('running')

    // A cancel wins; the worker's late result is refused and the job stays canceled.
    expect((await cancelJob(handle.db, job.id, t)).changed).toBe(true)
    expect(await finishJob(handle.db, job.id, 'w1', succeeded, t)).toBe(false)
    expect(await requeueJob(handle.db, job.id, 'w1', { runAfterMs: t, errorText: 'x', refundAttempt: false }, t)).toBe(false)
    const after = await jobRow(handle, job.id)
    expect(after.status).toBe('canceled')
    expect(after.result_json).toBeNull()
  })

  it('requeues with a refunded attempt when the run must not count (release)', async () => {
    const t = slot()
    await drain(t)
    const job = await seedJob(handle, t)
    await claimJobs(handle, { limit: 1, nowMs: t, leaseOwner: 'w1', leaseMs: LEASE_MS })
    expect(await requeueJob(handle.db, job.id, 'w1', { runAfterMs: t + 5_000, errorText: null, refundAttempt: true }, t)).toBe(true)
    const row = await jobRow(handle, job.id)
    expect(row).toMatchObject({ status: 'pending', attempts: 0, lease_owner: null, lease_expires_at: null })
    expect(fromDbTime(row.run_after)).toBe(t + 5_000)
  })

  it('renews only the leases this worker still holds, and reports the others', async () => {
    const t = slot()
    await drain(t)
    const kept = await seedJob(handle, t)
    const canceled = await seedJob(handle, t)
    await claimJobs(handle, { limit: 2, nowMs: t, leaseOwner: 'w1', leaseMs: LEASE_MS })
    await cancelJob(handle.db, canceled.id, t)
    const before = await jobRow(handle, kept.id)

    const lost = await renewLeases(handle.db, [kept.id, canceled.id], 'w1', t + 10_000, LEASE_MS)
    expect(lost).toEqual([canceled.id])
    const row = await jobRow(handle, kept.id)
    expect(fromDbTime(row.lease_expires_at!)).toBe(t + 10_000 + LEASE_MS)
    // A heartbeat is not a change a client sees: the ETag's version stays.
    expect(row.version).toBe(before.version)
    expect(await renewLeases(handle.db, [kept.id], 'w2', t + 10_000, LEASE_MS)).toEqual([kept.id])
  })

  it('returns expired leases to pending with job-level backoff, and fails jobs whose attempts are spent', async () => {
    const t = slot()
    await drain(t)
    const crashed = await seedJob(handle, t)
    const lastTry = await seedJob(handle, t, { attempts: 2, error_text: 'openai: HTTP 503' })
    const alive = await seedJob(handle, t)
    await claimJobs(handle, { limit: 2, nowMs: t, leaseOwner: 'dead-worker', leaseMs: 1_000 })
    await claimJobs(handle, { limit: 1, nowMs: t, leaseOwner: 'live-worker', leaseMs: 1_000 })
    expect((await jobRow(handle, lastTry.id)).attempts).toBe(3)
    // The live worker renews in time; the dead one does not.
    await renewLeases(handle.db, [alive.id], 'live-worker', t + 900, 1_000)

    const seen: number[] = []
    const r = await reapExpiredLeases(handle.db, t + 1_500, { maxAttempts: 3, backoffMs: (attempts) => { seen.push(attempts); return 4_000 * attempts } })
    expect(r).toMatchObject({ requeued: 1, failed: 1 })
    expect(r.ids).toHaveLength(2)
    expect(seen).toEqual([1])

    const back = await jobRow(handle, crashed.id)
    expect(back).toMatchObject({ status: 'pending', attempts: 1, lease_owner: null, lease_expires_at: null })
    expect(fromDbTime(back.run_after)).toBe(t + 1_500 + 4_000)
    expect(back.error_text).toMatch(/ran out its lease/)

    const failed = await jobRow(handle, lastTry.id)
    expect(failed).toMatchObject({ status: 'failed', attempts: 3, lease_owner: null })
    expect(failed.error_text).toMatch(/Attempt 3 of 3 ran out its lease/)
    expect(failed.error_text).toMatch(/openai: HTTP 503/)

    expect((await jobRow(handle, alive.id))).toMatchObject({ status: 'running', lease_owner: 'live-worker' })
    // Nothing left to reap at the same moment.
    expect(await reapExpiredLeases(handle.db, t + 1_500, { maxAttempts: 3, backoffMs: () => 0 })).toMatchObject({ requeued: 0, failed: 0, ids: [] })
  })

  it('after a reap and a new claim, the old worker can neither write nor renew, and the new lease is left alone', async () => {
    const t = slot()
    await drain(t)
    const job = await seedJob(handle, t)
    await claimJobs(handle, { limit: 1, nowMs: t, leaseOwner: 'w1', leaseMs: 1_000 })
    expect(await reapExpiredLeases(handle.db, t + 2_000, { maxAttempts: 3, backoffMs: () => 500 })).toMatchObject({ requeued: 1, failed: 0 })
    // Not due before its backoff ends.
    expect(await claimJobs(handle, { limit: 1, nowMs: t + 2_400, leaseOwner: 'w2', leaseMs: 60_000 })).toEqual([])
    const [again] = await claimJobs(handle, { limit: 1, nowMs: t + 2_500, leaseOwner: 'w2', leaseMs: 60_000 })
    expect(again).toMatchObject({ id: job.id, attempts: 2, lease_owner: 'w2' })

    expect(await renewLeases(handle.db, [job.id], 'w1', t + 2_600, 1_000)).toEqual([job.id])
    expect(await finishJob(handle.db, job.id, 'w1', succeeded, t + 2_600)).toBe(false)
    expect(await reapExpiredLeases(handle.db, t + 3_000, { maxAttempts: 3, backoffMs: () => 0 })).toMatchObject({ requeued: 0, failed: 0, ids: [] })
    expect(await finishJob(handle.db, job.id, 'w2', succeeded, t + 3_000)).toBe(true)
    expect(await jobRow(handle, job.id)).toMatchObject({ status: 'succeeded', attempts: 2, result_json: '{"output":"ok"}' })
  })
})
