import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { manualClock, systemClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { findJob, reapExpiredLeases } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { fromDbTime } from '../../src/db/time.js'
import { createProviderRegistry, type ProviderRegistry } from '../../src/providers/registry.js'
import { TestPool } from '../support/pool.js'
import { createProviderExecutor } from '../../src/worker/provider-executor.js'
import { dropMysqlDatabase, freshMysqlDatabase, waitFor } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { seedJob } from '../support/job-seed.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { RUN } from '../support/run-tag.js'

/**
 * A worker that can no longer renew its lease (its database connection is gone) cannot know
 * whether another replica will take the job once the lease runs out, so it stops its own provider
 * call first and writes nothing: no job runs twice at once. The reaper returns the job later.
 */
const DB = `gw_t3_lease_loss_${RUN}`
const LEASE_MS = 3_000
let fake: FakeProvider
let proxy: TcpProxy
let direct: DatabaseHandle
let viaProxy: DatabaseHandle
let registry: ProviderRegistry

beforeAll(async () => {
  fake = await startFakeProvider(() => 'hold')
  const url = await freshMysqlDatabase(DB)
  direct = await openDatabase({ url, prefix: 'wp_' })
  await runMigrations(direct)
  proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: Number(new URL(url).port || 3306) })
  viaProxy = await openDatabase({ url: proxy.via(url), prefix: 'wp_' })
  registry = createProviderRegistry({ defaultProvider: 'openai', defaultUrl: fake.baseUrl('lost'), defaultModel: 'gpt-test', models: {}, clock: systemClock })
})

afterAll(async () => {
  proxy?.resume()
  fake?.release()
  await registry?.close()
  await viaProxy?.close().catch(() => {})
  await proxy?.close()
  await direct?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('a worker cut off from the database', () => {
  // 'reset': queries fail at once. 'blackhole': they hang, so no error ever reaches the heartbeat.
  it.each(['reset', 'blackhole'] as const)('(%s) aborts its provider call before the lease can run out, writes nothing, and the reaper returns the job', async (mode) => {
    fake.calls.length = 0
    // Time stands still unless the test moves it, so a slow machine cannot expire a lease by itself;
    // the heartbeat timer itself is real (every LEASE_MS / 3).
    const clock = manualClock(Date.now())
    const pool = new TestPool({
      handle: viaProxy, clock, logger: pino({ level: 'silent' }),
      execute: createProviderExecutor({ registry, clock, resultMaxBytes: 262_144, encryptionKeys: undefined, defaultModel: 'echo' }),
      concurrency: 1, leaseMs: LEASE_MS, maxAttempts: 3, pollMs: 100, reapEveryMs: 600_000,
    })
    const job = await seedJob(direct, clock.now(), { model: 'gpt-test', request_json: JSON.stringify({ model: 'gpt-test', input: `cut off ${mode}`, params: {} }) })
    const leaseUntil = async () => fromDbTime((await findJob(direct.db, job.id))!.lease_expires_at!)
    pool.start()
    try {
      await waitFor(() => (fake.heldCount === 1 ? true : undefined), 10_000, 'the provider request')
      const call = fake.calls.at(-1)!
      const firstLease = await leaseUntil()
      expect(firstLease).toBe(clock.now() + LEASE_MS)

      // While the database answers, heartbeats carry the lease past its first end.
      for (let step = 0; step < 3; step++) {
        clock.advance(LEASE_MS / 3)
        await waitFor(async () => ((await leaseUntil()) === clock.now() + LEASE_MS ? true : undefined), 10_000, 'a renewal')
      }
      expect(clock.now()).toBe(firstLease)
      expect(call.closedEarly).toBe(false)
      expect(pool.size).toBe(1)

      await proxy.pause(mode)
      // 40% of the lease is left: less than the next heartbeat could safely wait for.
      clock.advance(LEASE_MS * 0.6)
      await waitFor(() => (call.closedEarly ? true : undefined), 10_000, 'the worker to abort its provider call')
      await waitFor(() => (pool.size === 0 ? true : undefined), 5_000, 'the pool to let go of the job')
      expect(clock.now()).toBeLessThan(firstLease + LEASE_MS)

      proxy.resume()
      // Nothing was written: the row still shows this worker's lease, which now runs out.
      const stale = (await findJob(direct.db, job.id))!
      expect(stale).toMatchObject({ status: 'running', lease_owner: pool.workerId, attempts: 1 })
      clock.advance(LEASE_MS)
      await waitFor(async () => {
        const r = await reapExpiredLeases(direct.db, clock.now(), { maxAttempts: 3, backoffMs: () => 600_000 })
        return r.requeued === 1 ? true : undefined
      }, 10_000, 'the lease to be reaped')
      expect(await findJob(direct.db, job.id)).toMatchObject({ status: 'pending', attempts: 1, lease_owner: null })
      expect(fake.calls).toHaveLength(1)
    } finally {
      proxy.resume()
      await pool.stop(0)
    }
  })
})
