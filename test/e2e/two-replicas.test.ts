import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { dropMysqlDatabase, freshMysqlDatabase, REDIS_URL, signToken, waitFor } from '../helpers.js'
import { chatCompletion, promptOf, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { killAllGateways, postJob, startGateway, type GatewayProcess } from '../support/gateway-process.js'
import { RUN } from '../support/run-tag.js'

/**
 * Two gateway processes share one MariaDB and one Redis; 500 jobs are created through both. The
 * OpenAI-compatible fake counts calls per Idempotency-Key: each job must succeed after exactly one
 * call. Leases (60 s) are far longer than any job, so no lease can expire and excuse a second call.
 * Each replica reaches the provider under its own path, which tells who did the work.
 */
const DB = `gw_t3_e2e_two_${RUN}`
const JOBS = 500
const PREFIX = `gwt3two_${RUN}_`
let fake: FakeProvider
let inspect: DatabaseHandle
let a: GatewayProcess
let b: GatewayProcess

beforeAll(async () => {
  fake = await startFakeProvider((call) => ({ json: chatCompletion(`done: ${promptOf(call)}`), delayMs: 15 }))
  const url = await freshMysqlDatabase(DB)
  const env = (name: string) => ({
    DATABASE_URL: url,
    REDIS_URL,
    WP_TABLE_PREFIX: PREFIX,
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl(name),
    AI_DEFAULT_MODEL: 'gpt-test',
    WORKER_CONCURRENCY: '8',
    JOB_LEASE_SECONDS: '60',
    RATE_LIMIT_MAX: '0',
    DEDUPE_WINDOW_SECONDS: '0',
  })
  ;[a, b] = await Promise.all([startGateway({ name: 'a', env: env('a') }), startGateway({ name: 'b', env: env('b') })])
  inspect = await openDatabase({ url, prefix: PREFIX })
}, 90_000)

afterAll(async () => {
  await killAllGateways()
  await inspect?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('two gateway processes on one database and one Redis', () => {
  it('run 500 jobs: every job succeeds after exactly one provider call, and both replicas take part', async () => {
    const token = await signToken({ sub: '31' })
    const ids: number[] = []
    // Creates go to both replicas, 16 at a time.
    for (let start = 0; start < JOBS; start += 16) {
      const batch = Array.from({ length: Math.min(16, JOBS - start) }, (_, k) => start + k)
      ids.push(...await Promise.all(batch.map((i) => postJob(i % 2 === 0 ? a : b, token, { input: `job ${i}` }))))
    }
    expect(new Set(ids).size).toBe(JOBS)

    await waitFor(async () => {
      const open = await inspect.db.selectFrom('ai_jobs').select('id').where('status', 'in', ['pending', 'running']).limit(1).execute()
      return open.length === 0 ? true : undefined
    }, 120_000, 'all 500 jobs to finish')

    const rows = await inspect.db.selectFrom('ai_jobs').select(['id', 'status', 'attempts', 'idempotency_key', 'result_json', 'error_text']).execute()
    expect(rows).toHaveLength(JOBS)
    for (const r of rows) {
      expect(r, `job ${r.id}: ${r.error_text}`).toMatchObject({ status: 'succeeded', attempts: 1 })
    }

    // The provider's view: 500 calls, one per key, and the keys are exactly the jobs' keys.
    expect(fake.calls).toHaveLength(JOBS)
    const perKey = new Map<string, number>()
    for (const c of fake.calls) perKey.set(c.key, (perKey.get(c.key) ?? 0) + 1)
    expect([...perKey.values()].filter((n) => n > 1)).toEqual([])
    expect(new Set(perKey.keys())).toEqual(new Set(rows.map((r) => r.idempotency_key)))

    // Each replica reaches the provider under its own path: both did part of the work.
    const byA = fake.callsTo('a').length
    const byB = fake.callsTo('b').length
    expect(byA + byB).toBe(JOBS)
    expect(byA).toBeGreaterThan(0)
    expect(byB).toBeGreaterThan(0)

    expect(a.alive && b.alive).toBe(true)
  })
})
