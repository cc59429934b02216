import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { systemClock } from '../../src/clock.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, REDIS_URL, testConfig, waitFor } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { seedJob } from '../support/job-seed.js'
import { BASE, createJob, QUIET_ENV, row, waitForRow } from '../support/worker-app.js'
import { RUN } from '../support/run-tag.js'

/**
 * Two replicas on one database and one Redis. Replica A only serves the API; B runs the pool with
 * a fallback poll of a minute, so only a Redis message can explain B acting within seconds.
 */
const DB = `gw_t3_wake_${RUN}`
const POLL_MS = 60_000
let fake: FakeProvider
let a: FastifyInstance
let b: FastifyInstance
/** A third app, without Redis, on its own table prefix in the same database. */
let local: FastifyInstance
let auth: Record<string, string>

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))])
}

beforeAll(async () => {
  fake = await startFakeProvider((call) => (call.body?.messages?.[0]?.content === 'hold me' ? 'hold' : { json: { choices: [{ message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1 } } }))
  const url = await freshMysqlDatabase(DB)
  const env = {
    ...QUIET_ENV,
    DATABASE_URL: url,
    REDIS_URL,
    // The store prefixes Redis keys and channels with the table prefix: this file's own namespace.
    WP_TABLE_PREFIX: `gwt3wake_${RUN}_`,
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('wake'),
    AI_DEFAULT_MODEL: 'gpt-test',
    WORKER_CONCURRENCY: '4',
    JOB_LEASE_SECONDS: '60',
  }
  a = await buildApp(testConfig(env), { logger: false, clock: systemClock, startWorkers: false })
  b = await buildApp(testConfig(env), { logger: false, clock: systemClock, startWorkers: true, poolOptions: { pollMs: POLL_MS, reapEveryMs: POLL_MS } })
  local = await buildApp(testConfig({ ...env, REDIS_URL: undefined, WP_TABLE_PREFIX: `gwt3local_${RUN}_` }), {
    logger: false, clock: systemClock, startWorkers: true, poolOptions: { pollMs: POLL_MS, reapEveryMs: POLL_MS },
  })
  auth = await bearer({ sub: '11' })
}, 60_000)

afterAll(async () => {
  fake?.release()
  await a?.close()
  await b?.close()
  await local?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('cross-replica events through Redis', () => {
  it('a create on A wakes the pool on B at once', async () => {
    expect(a.pool.isRunning).toBe(false)
    expect(b.pool.isRunning).toBe(true)
    expect(a.store.kind).toBe('redis')

    // Control: a row that appears without an event stays pending, since B's poll is a minute away.
    const silent = await seedJob(b.db, Date.now(), { model: 'gpt-test', request_json: JSON.stringify({ model: 'gpt-test', input: 'silent', params: {} }) })
    await new Promise((resolve) => setTimeout(resolve, 1_500))
    expect((await row(b, silent.id)).status).toBe('pending')

    const started = Date.now()
    const id = await createJob(a, auth, { input: 'wake up, B' })
    const done = await waitForRow(b, id, (r) => r.status === 'succeeded', 10_000)
    const elapsed = Date.now() - started
    expect(elapsed).toBeLessThan(POLL_MS / 6)
    expect(done.attempts).toBe(1)
    expect(fake.callsFor(done.idempotency_key)).toHaveLength(1)
    // B's claim round took every due job, the silent one too.
    expect(await waitForRow(b, silent.id, (r) => r.status === 'succeeded', 10_000)).toMatchObject({ attempts: 1 })
  })

  it('a cancel on A aborts the provider call running on B', async () => {
    const id = await createJob(a, auth, { input: 'hold me' })
    await waitFor(() => (fake.heldCount === 1 ? true : undefined), 10_000, 'the provider request from B')
    const call = fake.calls.at(-1)!
    expect(b.pool.runningIds()).toContain(id)

    const res = await a.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers: auth })
    expect(res.statusCode).toBe(200)
    // B's heartbeat is 20 s away (a 60 s lease); only the Redis message can abort this fast.
    await within(call.closed, 5_000, "the provider connection's close")
    expect(call.answered).toBe(false)
    await waitFor(() => (b.pool.size === 0 ? true : undefined), 5_000, 'B to let go of the job')
    expect(await row(a, id)).toMatchObject({ status: 'canceled', result_json: null, attempts: 1 })
  })

  it('without Redis, a create wakes the local pool at once', async () => {
    expect(local.store.kind).toBe('memory')
    const silent = await seedJob(local.db, Date.now(), { model: 'gpt-test', request_json: JSON.stringify({ model: 'gpt-test', input: 'silent local', params: {} }) })
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    expect((await row(local, silent.id)).status).toBe('pending')

    const started = Date.now()
    const id = await createJob(local, auth, { input: 'wake up, local' })
    await waitForRow(local, id, (r) => r.status === 'succeeded', 10_000)
    expect(Date.now() - started).toBeLessThan(POLL_MS / 6)
  })
})
