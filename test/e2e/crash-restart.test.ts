import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { dropMysqlDatabase, freshMysqlDatabase, signToken, waitFor } from '../helpers.js'
import { chatCompletion, promptOf, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { killAllGateways, postJob, startGateway } from '../support/gateway-process.js'
import { RUN } from '../support/run-tag.js'

/**
 * A gateway killed with SIGKILL in the middle of provider calls loses nothing: once its leases
 * expire, the next gateway's reaper returns the jobs to the queue and runs them. Every job ends
 * terminal; none is left running; none disappears.
 */
const DB = `gw_t3_e2e_crash_${RUN}`
const JOBS = 12
let fake: FakeProvider
let inspect: DatabaseHandle
let env: Record<string, string>

beforeAll(async () => {
  // Slow enough that the kill lands mid-call.
  fake = await startFakeProvider((call) => ({ json: chatCompletion(`done: ${promptOf(call)}`), delayMs: 1_500 }))
  const url = await freshMysqlDatabase(DB)
  env = {
    DATABASE_URL: url,
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('crash'),
    AI_DEFAULT_MODEL: 'gpt-test',
    WORKER_CONCURRENCY: '4',
    JOB_LEASE_SECONDS: '5',
    JOB_MAX_ATTEMPTS: '3',
    RATE_LIMIT_MAX: '0',
    DEDUPE_WINDOW_SECONDS: '0',
  }
}, 60_000)

afterAll(async () => {
  await killAllGateways()
  await inspect?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('kill -9 of a gateway with jobs running, then a restart', () => {
  it('every job reaches a terminal state; none is stuck running and none is lost', async () => {
    const first = await startGateway({ name: 'first', env })
    const token = await signToken({ sub: '21' })
    const ids: number[] = []
    for (let i = 0; i < JOBS; i++) ids.push(await postJob(first, token, { input: `job ${i}` }))

    inspect = await openDatabase({ url: env.DATABASE_URL!, prefix: 'wp_' })
    // Four calls in flight (the pool is full), then the crash.
    await waitFor(() => (fake.calls.filter((c) => !c.answered).length >= 4 ? true : undefined), 20_000, 'four provider calls in flight')
    first.kill('SIGKILL')
    expect(await first.exited).toMatchObject({ signal: 'SIGKILL' })

    const orphaned = await inspect.db.selectFrom('ai_jobs').select(['id', 'lease_owner']).where('status', '=', 'running').execute()
    expect(orphaned.length).toBeGreaterThanOrEqual(1)
    for (const r of orphaned) expect(r.lease_owner).toMatch(new RegExp(`:${first.pid}:`))
    const orphanIds = new Set(orphaned.map((r) => Number(r.id)))

    // The orphans' short leases (5 s, written by the first gateway) decide when they come back;
    // the second gateway's own leases are long, so a busy machine cannot expire them.
    const second = await startGateway({ name: 'second', env: { ...env, JOB_LEASE_SECONDS: '60' } })
    await waitFor(async () => {
      const open = await inspect.db.selectFrom('ai_jobs').select('id').where('status', 'in', ['pending', 'running']).execute()
      return open.length === 0 ? true : undefined
    }, 60_000, 'every job to finish after the restart')

    const rows = await inspect.db.selectFrom('ai_jobs').selectAll().orderBy('id').execute()
    expect(rows.map((r) => Number(r.id))).toEqual(ids)
    for (const r of rows) {
      expect(r.status).toBe('succeeded')
      expect(JSON.parse(r.result_json!)).toMatchObject({ output: expect.stringMatching(/^done: job \d+$/) })
      // A job orphaned by the crash was claimed twice (the crash spent one attempt); the rest once.
      expect(r.attempts).toBe(orphanIds.has(Number(r.id)) ? 2 : 1)
      // No job ran twice at once: a second provider call only for jobs whose first worker died.
      expect(fake.callsFor(r.idempotency_key)).toHaveLength(r.attempts)
    }
    expect(second.alive).toBe(true)
    expect(await second.stop('SIGTERM')).toEqual({ code: 0, signal: null })
  })
})
