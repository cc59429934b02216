import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { findJob } from '../../src/db/jobs-repository.js'
import { dropMysqlDatabase, freshMysqlDatabase, signToken, waitFor } from '../helpers.js'
import { chatCompletion, promptOf, startFakeProvider, type FakeProvider, type Reply } from '../support/fake-provider.js'
import { killAllGateways, postJob, startGateway } from '../support/gateway-process.js'
import { seedJob } from '../support/job-seed.js'
import { RUN } from '../support/run-tag.js'

/**
 * SIGTERM to a real gateway process with four jobs running: the two short ones finish inside
 * SHUTDOWN_GRACE_SECONDS, the two long ones are aborted at its end and released to `pending`
 * with their attempt given back; the process then exits 0. A restarted gateway runs them.
 */
const DB = `gw_t3_e2e_sigterm_${RUN}`
let fake: FakeProvider
let inspect: DatabaseHandle
let env: Record<string, string>
let longReply: Reply = 'hold'

beforeAll(async () => {
  fake = await startFakeProvider((call) => {
    const prompt = promptOf(call)
    if (prompt.startsWith('short')) return { json: chatCompletion(`done: ${prompt}`), delayMs: 800 }
    return longReply
  })
  const url = await freshMysqlDatabase(DB)
  env = {
    DATABASE_URL: url,
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('term'),
    AI_DEFAULT_MODEL: 'gpt-test',
    // One slot more than the jobs below, so only the shutdown can keep a new job from being claimed.
    WORKER_CONCURRENCY: '5',
    // Long enough that no heartbeat delay on a busy machine can cost a lease during the test.
    JOB_LEASE_SECONDS: '30',
    SHUTDOWN_GRACE_SECONDS: '3',
    RATE_LIMIT_MAX: '0',
    DEDUPE_WINDOW_SECONDS: '0',
  }
  inspect = await openDatabase({ url, prefix: 'wp_' })
}, 60_000)

afterAll(async () => {
  fake?.release()
  await killAllGateways()
  await inspect?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('SIGTERM with jobs running', () => {
  it('finishes the short jobs, releases the long ones without spending an attempt, leaves none running, and exits 0', async () => {
    // At info level the gateway logs the moment it starts shutting down.
    const gateway = await startGateway({ name: 'term', env: { ...env, LOG_LEVEL: 'info' } })
    const token = await signToken({ sub: '41' })
    const shortIds = [await postJob(gateway, token, { input: 'short a' }), await postJob(gateway, token, { input: 'short b' })]
    const longIds = [await postJob(gateway, token, { input: 'long a' }), await postJob(gateway, token, { input: 'long b' })]
    await waitFor(() => (fake.callsTo('term').length === 4 ? true : undefined), 20_000, 'four provider calls')

    gateway.kill('SIGTERM')
    await waitFor(() => (gateway.output.some((line) => line.includes('shutting down')) ? true : undefined), 10_000, 'the shutdown to begin')
    // Claiming has stopped: a job that appears now is left for the next gateway, although a slot
    // is free and the poll (500 ms) comes round several times during the grace period.
    const late = await seedJob(inspect, Date.now(), { model: 'gpt-test', request_json: JSON.stringify({ model: 'gpt-test', input: 'short late', params: {} }) })
    const exit = await gateway.exited
    expect(exit).toEqual({ code: 0, signal: null })

    for (const id of shortIds) {
      expect(await findJob(inspect.db, id)).toMatchObject({ status: 'succeeded', attempts: 1 })
    }
    for (const id of longIds) {
      expect(await findJob(inspect.db, id)).toMatchObject({ status: 'pending', attempts: 0, lease_owner: null, result_json: null })
    }
    expect(await inspect.db.selectFrom('ai_jobs').select('id').where('status', '=', 'running').execute()).toEqual([])
    expect(await findJob(inspect.db, late.id)).toMatchObject({ status: 'pending', attempts: 0 })
    expect(fake.callsFor(late.idempotency_key)).toHaveLength(0)
    const longCalls = fake.callsTo('term').filter((c) => promptOf(c).startsWith('long'))
    expect(longCalls).toHaveLength(2)
    for (const c of longCalls) expect(c.closedEarly).toBe(true)

    // Released, not lost: the next gateway runs them as first attempts.
    longReply = { json: chatCompletion('finally') }
    const next = await startGateway({ name: 'term-2', env })
    for (const id of [...longIds, late.id]) {
      await waitFor(async () => ((await findJob(inspect.db, id))?.status === 'succeeded' ? true : undefined), 30_000, `job ${id} to run again`)
      expect(await findJob(inspect.db, id)).toMatchObject({ status: 'succeeded', attempts: 1 })
    }
    expect(await next.stop('SIGTERM')).toEqual({ code: 0, signal: null })
  })
})
