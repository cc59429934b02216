import type { FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock, systemClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { findJob, reapExpiredLeases } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { fromDbTime } from '../../src/db/time.js'
import { createProviderRegistry, type ProviderRegistry } from '../../src/providers/registry.js'
import { TestPool } from '../support/pool.js'
import { createProviderExecutor } from '../../src/worker/provider-executor.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, testConfig, waitFor } from '../helpers.js'
import { chatCompletion, promptOf, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { seedJob } from '../support/job-seed.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { createJob, QUIET_ENV } from '../support/worker-app.js'
import { RUN } from '../support/run-tag.js'

/**
 * SIGTERM (app.close): claiming stops, running jobs get SHUTDOWN_GRACE_SECONDS to finish, the
 * rest are aborted and released to `pending` with their attempt given back.
 */
let fake: FakeProvider

beforeAll(async () => {
  fake = await startFakeProvider((call) => {
    const prompt = promptOf(call)
    if (prompt.startsWith('short')) return { json: chatCompletion(`done: ${prompt}`), delayMs: 300 }
    return 'hold'
  })
})

afterAll(async () => {
  fake?.release()
  await fake?.close()
})

describe('closing the app with jobs running', () => {
  const DB = `gw_t3_shutdown_app_${RUN}`
  let app: FastifyInstance | undefined
  let inspect: DatabaseHandle | undefined

  afterAll(async () => {
    await app?.close().catch(() => {})
    await inspect?.close()
    await dropMysqlDatabase(DB)
  })

  it('lets short jobs finish within the grace period and releases the long ones without spending an attempt', async () => {
    const url = await freshMysqlDatabase(DB)
    const config = testConfig({
      ...QUIET_ENV,
      DATABASE_URL: url,
      AI_PROVIDER: 'openai',
      AI_PROVIDER_URL: fake.baseUrl('sd'),
      AI_DEFAULT_MODEL: 'gpt-test',
      WORKER_CONCURRENCY: '4',
      SHUTDOWN_GRACE_SECONDS: '2',
    })
    app = await buildApp(config, { logger: false })
    const auth = await bearer({ sub: '3' })
    const shortIds = [await createJob(app, auth, { input: 'short one' }), await createJob(app, auth, { input: 'short two' })]
    const longIds = [await createJob(app, auth, { input: 'long one' }), await createJob(app, auth, { input: 'long two' })]
    await waitFor(() => (fake.callsTo('sd').length === 4 ? true : undefined), 10_000, 'four provider requests')
    await app.close()
    app = undefined

    inspect = await openDatabase({ url, prefix: 'wp_' })
    for (const id of shortIds) {
      expect(await findJob(inspect.db, id)).toMatchObject({ status: 'succeeded', attempts: 1 })
    }
    for (const id of longIds) {
      const r = await findJob(inspect.db, id)
      expect(r).toMatchObject({ status: 'pending', attempts: 0, lease_owner: null, lease_expires_at: null, result_json: null })
    }
    const running = await inspect.db.selectFrom('ai_jobs').select('id').where('status', '=', 'running').execute()
    expect(running).toEqual([])
    const longCalls = fake.callsTo('sd').filter((c) => promptOf(c).startsWith('long'))
    expect(longCalls).toHaveLength(2)
    for (const c of longCalls) expect(c.closedEarly).toBe(true)
  })
})

describe('a grace period longer than the lease', () => {
  const DB = `gw_t3_shutdown_pool_${RUN}`
  let handle: DatabaseHandle
  let registry: ProviderRegistry

  beforeAll(async () => {
    handle = await openDatabase({ url: await freshMysqlDatabase(DB), prefix: 'wp_' })
    await runMigrations(handle)
    registry = createProviderRegistry({ defaultProvider: 'openai', defaultUrl: fake.baseUrl('lease'), defaultModel: 'gpt-test', models: {}, clock: systemClock })
  })

  afterAll(async () => {
    await registry?.close()
    await handle?.close()
    await dropMysqlDatabase(DB)
  })

  it('keeps renewing the leases of jobs still running, so another replica cannot reap and rerun them', async () => {
    const LEASE_MS = 1_500
    // Time moves only when the test moves it; the heartbeat timer is real (every LEASE_MS / 3).
    const clock = manualClock(Date.now())
    const pool = new TestPool({
      handle, clock, logger: pino({ level: 'silent' }),
      execute: createProviderExecutor({ registry, clock, resultMaxBytes: 262_144, encryptionKeys: undefined, defaultModel: 'echo' }),
      concurrency: 2, leaseMs: LEASE_MS, maxAttempts: 3, pollMs: 50, reapEveryMs: 100,
    })
    const job = await seedJob(handle, clock.now(), { model: 'gpt-test', request_json: JSON.stringify({ model: 'gpt-test', input: 'hold until released', params: {} }) })
    const leaseUntil = async () => fromDbTime((await findJob(handle.db, job.id))!.lease_expires_at!)
    pool.start()
    await waitFor(() => (fake.callsTo('lease').length === 1 ? true : undefined), 10_000, 'the provider request')

    const stopped = pool.stop(60_000)
    // Through the grace period, well past several leases: each step is renewed before the next,
    // and another replica's reaper, looking at every step, finds nothing to take.
    for (let step = 0; step < 6; step++) {
      clock.advance(LEASE_MS / 3)
      await waitFor(async () => ((await leaseUntil()) === clock.now() + LEASE_MS ? true : undefined), 10_000, `the renewal at step ${step}`)
      expect(await reapExpiredLeases(handle.db, clock.now(), { maxAttempts: 3, backoffMs: () => 0 })).toMatchObject({ requeued: 0, failed: 0, ids: [] })
    }
    expect(pool.size).toBe(1)
    fake.release({ json: chatCompletion('finished in the grace period') })
    await stopped

    expect(await findJob(handle.db, job.id)).toMatchObject({ status: 'succeeded', attempts: 1 })
    expect(fake.callsTo('lease')).toHaveLength(1)
    expect(pool.size).toBe(0)
  })
})

describe('a claim in flight when the shutdown begins', () => {
  const DB = `gw_t3_shutdown_claim_${RUN}`
  let direct: DatabaseHandle
  let viaProxy: DatabaseHandle
  let proxy: TcpProxy
  let registry: ProviderRegistry

  beforeAll(async () => {
    const url = await freshMysqlDatabase(DB)
    direct = await openDatabase({ url, prefix: 'wp_' })
    await runMigrations(direct)
    proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: Number(new URL(url).port || 3306) })
    viaProxy = await openDatabase({ url: proxy.via(url), prefix: 'wp_' })
    registry = createProviderRegistry({ defaultProvider: 'openai', defaultUrl: fake.baseUrl('inflight'), defaultModel: 'gpt-test', models: {}, clock: systemClock })
  })

  afterAll(async () => {
    proxy?.resume()
    await registry?.close()
    await viaProxy?.close()
    await proxy?.close()
    await direct?.close()
    await dropMysqlDatabase(DB)
  })

  it('waits for it and runs what it took, instead of returning while those jobs start behind its back', async () => {
    const pool = new TestPool({
      handle: viaProxy, clock: systemClock, logger: pino({ level: 'silent' }),
      execute: createProviderExecutor({ registry, clock: systemClock, resultMaxBytes: 262_144, encryptionKeys: undefined, defaultModel: 'echo' }),
      concurrency: 2, leaseMs: 30_000, maxAttempts: 3, pollMs: 600_000, reapEveryMs: 600_000,
    })
    const job = await seedJob(direct, Date.now(), { model: 'gpt-test', request_json: JSON.stringify({ model: 'gpt-test', input: 'short but claimed late', params: {} }) })
    // The database stalls, so the claim that start() makes hangs in flight.
    await proxy.pause('blackhole')
    pool.start()
    let stopped = false
    const stopping = pool.stop(30_000).then(() => {
      stopped = true
    })
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(stopped).toBe(false)
    proxy.resume()
    await stopping

    // By the time stop() returns, the job the late claim took has run and been written.
    expect(pool.size).toBe(0)
    expect(await findJob(direct.db, job.id)).toMatchObject({ status: 'succeeded', attempts: 1 })
    expect(fake.callsTo('inflight')).toHaveLength(1)
  })
})
