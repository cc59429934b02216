/**
 * Visitors are limited per client address as well as per owner (SPEC §8): a bot that mints a
 * fresh visitor id for every request still meets RATE_LIMIT_IP_MAX, IPv6 counts per /64, and
 * forwarded headers count only from a peer inside TRUST_PROXY.
 */
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { createLogger } from '../../src/logger.js'
import { bearer, DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
let visitor = 0
const freshVisitor = () => bearer({ sub: '0', sid: `visitor-${RUN}-${String(++visitor).padStart(6, '0')}` })

describe.each(DIALECTS)('RATE_LIMIT_IP_MAX=3 (%s)', (dialect) => {
  let app: FastifyInstance
  let proxied: FastifyInstance
  let cleanup: () => Promise<void>
  const lines: string[] = []

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_visitor_limits_${dialect}_${RUN}`)
    cleanup = db.cleanup
    const sink = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done() } })
    const env = { DATABASE_URL: db.url, RATE_LIMIT_IP_MAX: '3', RATE_LIMIT_MAX: '100', DEDUPE_WINDOW_SECONDS: '0' }
    app = await buildApp(testConfig(env), { logger: createLogger('warn', sink), startWorkers: false })
    proxied = await buildApp(testConfig({ ...env, TRUST_PROXY: '10.0.0.1' }), { logger: false, startWorkers: false, migrate: false })
  })
  afterAll(async () => {
    await app?.close()
    await proxied?.close()
    await cleanup?.()
  })

  const create = async (target: FastifyInstance, headers: Record<string, string>, remoteAddress: string) =>
    target.inject({ method: 'POST', url: `${BASE}/jobs`, remoteAddress, headers: { 'content-type': 'application/json', ...headers }, payload: { input: `job ${++visitor}` } })

  it('counts every visitor id from one address together', async () => {
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await create(app, await freshVisitor(), '198.51.100.1')).statusCode)
    expect(statuses).toEqual([202, 202, 202, 429])
    const refused = await create(app, await freshVisitor(), '198.51.100.1')
    expect(refused.json()).toMatchObject({ code: 'ai_rate_limited', data: { status: 429 } })
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0)
    // Another address has its own window; a WordPress user's create is not a visitor's.
    expect((await create(app, await freshVisitor(), '198.51.100.2')).statusCode).toBe(202)
    expect((await create(app, await bearer({ sub: '9' }), '198.51.100.1')).statusCode).toBe(202)
  })

  it('counts IPv6 addresses per /64', async () => {
    const statuses = []
    for (const address of ['2001:db8:7:8::1', '2001:db8:7:8:a:b:c:d', '2001:db8:7:8:ffff:ffff:ffff:ffff', '2001:db8:7:8::2']) {
      statuses.push((await create(app, await freshVisitor(), address)).statusCode)
    }
    expect(statuses).toEqual([202, 202, 202, 429])
    expect((await create(app, await freshVisitor(), '2001:db8:7:9::1')).statusCode).toBe(202)
  })

  it('ignores X-Forwarded-For from a peer outside TRUST_PROXY, and says so once, naming the setting', async () => {
    const statuses = []
    for (let i = 0; i < 4; i++) {
      statuses.push((await create(app, { ...(await freshVisitor()), 'x-forwarded-for': `192.0.2.${i + 10}` }, '198.51.100.9')).statusCode)
    }
    // Made-up forwarded addresses do not buy fresh windows: all four count as the peer's.
    expect(statuses).toEqual([202, 202, 202, 429])
    const warnings = lines.filter((l) => l.includes('X-Forwarded-For'))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain('TRUST_PROXY')
  })

  it('counts the forwarded client address when the peer is the trusted proxy', async () => {
    const statuses = []
    for (let i = 0; i < 4; i++) statuses.push((await create(proxied, { ...(await freshVisitor()), 'x-forwarded-for': '203.0.113.50' }, '10.0.0.1')).statusCode)
    expect(statuses).toEqual([202, 202, 202, 429])
    expect((await create(proxied, { ...(await freshVisitor()), 'x-forwarded-for': '203.0.113.51' }, '10.0.0.1')).statusCode).toBe(202)
  })
})
