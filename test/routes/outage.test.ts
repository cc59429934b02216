import { RUN } from '../support/run-tag.js'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, MYSQL_BASE, testConfig, waitFor } from '../helpers.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

const NAME = `gw_t2_outage_mysql_${RUN}`
const BASE = '/wp-json/ai/v1'
// Generous: a reset connection fails at once; this only catches a request that hangs on the pool.
const QUICK_MS = 4_000

describe('the database goes away and comes back (MariaDB through a TCP proxy)', () => {
  let proxy: TcpProxy
  let app: FastifyInstance
  let headers: Record<string, string>

  beforeAll(async () => {
    const url = await freshMysqlDatabase(NAME)
    const target = new URL(MYSQL_BASE)
    proxy = await startTcpProxy({ targetHost: target.hostname, targetPort: Number(target.port || 3306) })
    app = await buildApp(testConfig({ DATABASE_URL: proxy.via(url) }), { logger: false, startWorkers: false })
    headers = await bearer({ sub: '42' })
  })
  afterAll(async () => {
    await app?.close()
    await proxy?.close()
    await dropMysqlDatabase(NAME)
  })

  const create = (input: string) => app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input } })
  const read = (id: number) => app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
  const timed = async <T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> => {
    const started = performance.now()
    const value = await fn()
    return { value, ms: performance.now() - started }
  }

  it('answers 503 ai_unavailable with Retry-After while the database is down, and recovers without a restart', async () => {
    const before = await create('before the outage')
    expect(before.statusCode).toBe(202)
    const id = before.json().job_id as number
    expect((await read(id)).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200)

    await proxy.pause()

    for (const request of [() => create('during the outage'), () => read(id), () => app.inject({ method: 'GET', url: `${BASE}/jobs`, headers })]) {
      const { value: res, ms } = await timed(request)
      expect(res.statusCode).toBe(503)
      expect(res.json()).toEqual({ code: 'ai_unavailable', message: expect.any(String), data: { status: 503 } })
      // No driver text reaches the client.
      expect(res.body).not.toMatch(/ECONN|PROTOCOL|mysql|sql/i)
      const retryAfter = Number(res.headers['retry-after'])
      expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true)
      expect(res.headers['x-request-id']).toBeTruthy()
      expect(ms).toBeLessThan(QUICK_MS)
    }
    const notReady = await app.inject({ method: 'GET', url: '/readyz' })
    expect(notReady.statusCode).toBe(503)
    expect(notReady.json().checks.database).not.toMatch(/^ok/)
    // The process itself is fine.
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200)
    // Requests that never reach the database are unaffected.
    expect((await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: '' } })).statusCode).toBe(400)

    proxy.resume()

    const after = await create('after the outage')
    expect(after.statusCode).toBe(202)
    expect(after.json().job_id).toBeGreaterThan(id)
    expect((await read(id)).json()).toMatchObject({ job_id: id, status: 'pending' })
    expect((await read(after.json().job_id)).statusCode).toBe(200)
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200)
    // The job refused during the outage was not half-written.
    const listed = (await app.inject({ method: 'GET', url: `${BASE}/jobs`, headers })).json()
    expect(listed.jobs.map((j: { job_id: number }) => j.job_id)).toEqual([after.json().job_id, id])
  })

  it('survives a second outage the same way', async () => {
    await proxy.pause()
    const down = await create('second outage')
    expect(down.statusCode).toBe(503)
    expect(down.json().code).toBe('ai_unavailable')
    proxy.resume()
    expect((await create('second recovery')).statusCode).toBe(202)
  })
})

describe('the database stops answering without closing connections (a partition)', () => {
  const HUNG = `gw_t2_outage_hung_mysql_${RUN}`
  let proxy: TcpProxy
  let app: FastifyInstance
  let handle: DatabaseHandle
  let headers: Record<string, string>

  beforeAll(async () => {
    const url = await freshMysqlDatabase(HUNG)
    const target = new URL(MYSQL_BASE)
    proxy = await startTcpProxy({ targetHost: target.hostname, targetPort: Number(target.port || 3306) })
    handle = await openDatabase({ url: proxy.via(url), prefix: 'wp_', queryTimeoutMs: 1_500 })
    app = await buildApp(testConfig({ DATABASE_URL: proxy.via(url) }), { logger: false, startWorkers: false, handle })
    headers = await bearer({ sub: '43' })
  })
  afterAll(async () => {
    await app?.close()
    await handle?.close()
    await proxy?.close()
    await dropMysqlDatabase(HUNG)
  })

  it('answers 503 once the query timeout passes instead of hanging, then recovers', async () => {
    const ok = await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers, payload: { input: 'before' } })
    expect(ok.statusCode).toBe(202)

    await proxy.pause('blackhole')
    const started = performance.now()
    const hung = await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers, payload: { input: 'during' } })
    const ms = performance.now() - started
    expect(hung.statusCode).toBe(503)
    expect(hung.json().code).toBe('ai_unavailable')
    // Bounded by the 1.5 s query timeout (or the 5 s connect timeout for a fresh connection), never unbounded.
    expect(ms).toBeLessThan(12_000)

    proxy.resume()
    const after = await waitFor(async () => {
      const res = await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers, payload: { input: `after ${Date.now()}` } })
      return res.statusCode === 202 ? res : undefined
    }, 20_000, 'recovery after the partition')
    expect(after.json().job_id).toBeGreaterThan(ok.json().job_id)
  })
})
