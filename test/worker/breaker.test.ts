import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fromDbTime } from '../../src/db/time.js'
import { bearer, buildTestApp, type TestApp } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { createJob, offsetClock, QUIET_ENV, row } from '../support/worker-app.js'
import { RUN } from '../support/run-tag.js'

/**
 * SPEC §6: one breaker per provider opens after repeated failures and half-opens after its
 * cooldown; while it is open, jobs wait without spending attempts. The provider sits behind a TCP
 * proxy that the test "kills" (every connection reset, as a closed port) and brings back.
 * JOB_MAX_ATTEMPTS is 2, so a single attempt spent while the breaker is open would fail a job.
 */
const clock = offsetClock()
let fake: FakeProvider
let proxy: TcpProxy
let t: TestApp

beforeAll(async () => {
  fake = await startFakeProvider()
  proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: Number(new URL(fake.origin).port) })
  t = await buildTestApp({
    dialect: 'mysql',
    name: `gw_t3_breaker_${RUN}`,
    clock,
    env: {
      ...QUIET_ENV,
      AI_PROVIDER: 'openai',
      AI_PROVIDER_URL: `http://127.0.0.1:${proxy.port}/p/v1`,
      AI_DEFAULT_MODEL: 'gpt-test',
      JOB_MAX_ATTEMPTS: '2',
      WORKER_CONCURRENCY: '2',
    },
  })
}, 60_000)

afterAll(async () => {
  await t?.close()
  await proxy?.close()
  await fake?.close()
})

describe('the circuit breaker in front of a dead provider', () => {
  it('opens, keeps jobs waiting without spending attempts or failing them, then closes when the provider is back', async () => {
    const breaker = () => t.app.providers.resolve('gpt-test').breaker
    const pool = t.app.pool
    const auth = await bearer({ sub: '7' })
    const ids: number[] = []
    for (let i = 0; i < 6; i++) ids.push(await createJob(t.app, auth, { input: `job ${i}` }))
    await proxy.pause()

    // 1. Two jobs claimed; every try is reset. The fifth failure opens the breaker and ends both attempts.
    expect(await pool.runOnce()).toBe(2)
    expect(breaker().state).toBe('open')
    const openUntil = breaker().openUntil!
    expect(openUntil).toBeGreaterThan(clock.now() + 20_000)
    const tried = ids.slice(0, 2)
    for (const id of tried) expect(await row(t.app, id)).toMatchObject({ status: 'pending', attempts: 1 })
    const connectionsWhileDead = proxy.acceptedCount
    expect(connectionsWhileDead).toBeGreaterThanOrEqual(5)
    expect(fake.calls).toHaveLength(0)

    // 2. While it is open: every due job is claimed, refused by the breaker without a request,
    //    and put back until the cooldown ends, its attempt given back.
    clock.advance(2_000)
    let claimed = 0
    for (let round = 0; round < 6; round++) claimed += await pool.runOnce()
    expect(claimed).toBe(6)
    expect(await pool.runOnce()).toBe(0)
    expect(proxy.acceptedCount).toBe(connectionsWhileDead)
    for (const id of ids) {
      const r = await row(t.app, id)
      expect(r.status).toBe('pending')
      expect(r.attempts).toBe(tried.includes(id) ? 1 : 0)
      expect(fromDbTime(r.run_after)).toBe(openUntil)
    }

    // Still open a moment before the cooldown ends: nothing is due, nothing is sent.
    clock.advance(openUntil - clock.now() - 1_000)
    expect(await pool.runOnce()).toBe(0)

    // 3. The provider comes back; after the cooldown one probe goes through and closes the breaker.
    proxy.resume()
    clock.advance(2_000)
    expect(await pool.runOnce()).toBe(2)
    expect(breaker().state).toBe('closed')
    expect(fake.calls).toHaveLength(1)

    // 4. The rest run normally.
    clock.advance(2_000)
    for (let round = 0; round < 6 && (await pool.runOnce()) > 0; round++) { /* until the queue is empty */ }
    for (const id of ids) {
      const r = await row(t.app, id)
      expect(r.status).toBe('succeeded')
      // One attempt spent against the dead provider by the first two jobs; none while the breaker was open.
      expect(r.attempts).toBe(tried.includes(id) ? 2 : 1)
    }
    expect(fake.calls).toHaveLength(6)
    expect(new Set(fake.calls.map((c) => c.key)).size).toBe(6)
  })
})
