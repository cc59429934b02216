import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, REDIS_URL, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

const NAME = `gw_t3_redis_down_${RUN}`
const BASE = '/wp-json/ai/v1'

describe('Redis goes away (SPEC §6): creation and reads go on, limits fall back to memory', () => {
  let proxy: TcpProxy
  let app: FastifyInstance
  let headers: Record<string, string>

  beforeAll(async () => {
    const url = await freshMysqlDatabase(NAME)
    const redis = new URL(REDIS_URL)
    proxy = await startTcpProxy({ targetHost: redis.hostname, targetPort: Number(redis.port || 6379) })
    // Redis is unreachable from the very start: the gateway must still start.
    await proxy.pause()
    app = await buildApp(testConfig({
      DATABASE_URL: url, REDIS_URL: `redis://127.0.0.1:${proxy.port}`, RATE_LIMIT_MAX: '3', WP_TABLE_PREFIX: `wp${RUN}_`,
    }), { logger: false, startWorkers: false })
    headers = await bearer({ sub: '5' })
  }, 30_000)
  afterAll(async () => {
    await app?.close()
    await proxy?.close()
    await dropMysqlDatabase(NAME)
  })

  it('creates and reads jobs, rate-limits in memory, and counts the fallback', async () => {
    const created = []
    for (let i = 0; i < 3; i++) {
      const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: `no redis ${i}` } })
      expect(res.statusCode).toBe(202)
      created.push(res.json().job_id as number)
    }
    const read = await app.inject({ method: 'GET', url: `${BASE}/jobs/${created[0]}`, headers })
    expect(read.statusCode).toBe(200)
    const limited = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'one too many' } })
    expect(limited.statusCode).toBe(429)
    expect(limited.json().code).toBe('ai_rate_limited')
    const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
    const fallbacks = /ai_gateway_store_fallback_total\{operation="admitCreate"\} (\d+)/.exec(metrics)
    expect(Number(fallbacks?.[1])).toBeGreaterThanOrEqual(4)
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503)
  })

  it('uses Redis again once it returns', async () => {
    proxy.resume()
    const ready = async () => (await app.inject({ method: 'GET', url: '/readyz' })).statusCode
    const deadline = Date.now() + 15_000
    while ((await ready()) !== 200 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    expect(await ready()).toBe(200)
    // A new owner's window lives in Redis now: no more fallbacks are counted for it.
    const before = /ai_gateway_store_fallback_total\{operation="admitCreate"\} (\d+)/.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)?.[1]
    const other = await bearer({ sub: '6' })
    expect((await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: other, payload: { input: 'redis is back' } })).statusCode).toBe(202)
    const after = /ai_gateway_store_fallback_total\{operation="admitCreate"\} (\d+)/.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)?.[1]
    expect(after).toBe(before)
  })
})
