import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/clock.js'
import { cancelJob } from '../../src/db/jobs-repository.js'
import { bearer, buildTestApp, waitFor, type TestApp } from '../helpers.js'
import { chatCompletion, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { BASE, createJob, QUIET_ENV, row, waitForRow } from '../support/worker-app.js'
import { RUN } from '../support/run-tag.js'

/**
 * POST /jobs/:id/cancel: a pending job becomes `canceled`; a running one too, and its provider
 * request is aborted (the provider sees the connection close). Whatever the worker finishes
 * afterwards is dropped by the lease fence, so a canceled job stays canceled.
 */
let fake: FakeProvider
let t: TestApp
let auth: Record<string, string>

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))])
}

beforeAll(async () => {
  // Every request is held open until the test answers it or the gateway hangs up.
  fake = await startFakeProvider(() => 'hold')
  t = await buildTestApp({
    dialect: 'mysql',
    name: `gw_t3_cancel_${RUN}`,
    clock: systemClock,
    env: {
      ...QUIET_ENV,
      AI_PROVIDER: 'openai',
      AI_PROVIDER_URL: fake.baseUrl('p'),
      AI_DEFAULT_MODEL: 'gpt-test',
      WORKER_CONCURRENCY: '2',
      JOB_LEASE_SECONDS: '5',
    },
  })
  auth = await bearer({ sub: '5' })
}, 60_000)

afterAll(async () => {
  fake?.release()
  await t?.close()
  await fake?.close()
})

const cancel = (id: number, headers = auth) => t.app.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers })

describe('canceling jobs', () => {
  it('a running job: the provider request is aborted and the job ends, and stays, canceled', async () => {
    const id = await createJob(t.app, auth, { input: 'long thought' })
    const run = t.app.pool.runOnce()
    await waitFor(() => (fake.heldCount === 1 ? true : undefined), 10_000, 'the provider request')
    const call = fake.calls.at(-1)!
    expect((await row(t.app, id)).status).toBe('running')

    const res = await cancel(id)
    expect(res.statusCode).toBe(200)
    expect(res.json()).toMatchObject({ job_id: id, status: 'canceled' })

    await within(call.closed, 5_000, 'the provider connection close')
    expect(call.closedEarly).toBe(true)
    expect(call.answered).toBe(false)
    expect(await run).toBe(1)
    expect(t.app.pool.size).toBe(0)

    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'canceled', attempts: 1, result_json: null, lease_owner: null })
    expect(await t.app.pool.runOnce()).toBe(0)
    expect(fake.callsFor(r.idempotency_key)).toHaveLength(1)
  })

  it("the worker's late result is dropped when the cancel reached the database but not this worker", async () => {
    const id = await createJob(t.app, auth, { input: 'late answer' })
    const run = t.app.pool.runOnce()
    await waitFor(() => (fake.heldCount === 1 ? true : undefined), 10_000, 'the provider request')
    // As another replica's cancel whose event never arrived: the row changes, the call goes on.
    expect((await cancelJob(t.app.db.db, id, Date.now())).changed).toBe(true)
    fake.release({ json: chatCompletion('too late') })
    await run
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'canceled', result_json: null, error_text: null, provider_ms: null })
    const res = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: auth })
    expect(res.json()).toMatchObject({ status: 'canceled', result: null })
  })

  it('a pending job is canceled and never sent to the provider', async () => {
    const id = await createJob(t.app, auth, { input: 'never mind' })
    const res = await cancel(id)
    expect(res.statusCode).toBe(200)
    expect(res.json()).toMatchObject({ status: 'canceled', attempts: 0 })
    expect(await t.app.pool.runOnce()).toBe(0)
    expect(fake.callsFor((await row(t.app, id)).idempotency_key)).toHaveLength(0)
  })

  it('a finished job answers 409 ai_job_finished and does not change; another owner gets 404', async () => {
    const id = await createJob(t.app, auth, { input: 'twice' })
    expect((await cancel(id)).statusCode).toBe(200)
    const before = await row(t.app, id)
    const again = await cancel(id)
    expect(again.statusCode).toBe(409)
    expect(again.json()).toMatchObject({ code: 'ai_job_finished', data: { status: 409 } })
    expect((await row(t.app, id)).version).toBe(before.version)

    const stranger = await cancel(id, await bearer({ sub: '6' }))
    expect(stranger.statusCode).toBe(404)
  })

  it('a cancel whose event never arrives is still caught by the next heartbeat, which aborts the call', async () => {
    const pool = t.app.pool
    pool.start()
    const id = await createJob(t.app, auth, { input: 'heartbeat finds it' })
    await waitFor(() => (fake.heldCount === 1 ? true : undefined), 10_000, 'the provider request')
    const call = fake.calls.at(-1)!
    expect((await cancelJob(t.app.db.db, id, Date.now())).changed).toBe(true)
    // The heartbeat runs every JOB_LEASE_SECONDS / 3; the renewal finds the lease gone.
    await within(call.closed, 10_000, 'the provider connection close')
    await waitFor(() => (pool.size === 0 ? true : undefined), 5_000, 'the pool to let go of the job')
    expect(await waitForRow(t.app, id, (r) => r.status !== 'running')).toMatchObject({ status: 'canceled', result_json: null })
  })
})
