/**
 * Token budgets (SPEC §8) end to end: reserve at create, settle at the end, 429
 * ai_budget_exhausted with Retry-After and data.budget, counters shared by two replicas through
 * Redis, rebuilt from the database when Redis lost them, checked in the database while Redis is
 * cut off (never looser), UTC days and months crossed with an injected clock, calls answered
 * without usage charged their reservation, and GET /usage.
 */
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { bearer, DIALECTS, freshDatabase, REDIS_URL, testConfig } from '../helpers.js'
import { readAdminStats } from '../../src/jobs/admin-stats.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { RUN } from '../support/run-tag.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'

const BASE = '/wp-json/ai/v1'
// 8 bytes of input (2 tokens) and max_tokens 20: every create reserves 22.
const BODY = (n: number) => ({ input: `job${String(n).padStart(5, '0')}`, params: { max_tokens: 20 } })
const RESERVE = 22
// The echo provider reports 2 input + 2 output tokens for these inputs.
const BILLED = 4
const DAY_LIMIT = 100
const MONTH_LIMIT = 250
const BUDGETS = JSON.stringify({
  default: { tokens_per_day: DAY_LIMIT, tokens_per_month: MONTH_LIMIT },
  users: { 77: null },
  site: { tokens_per_month: 100_000 },
})

describe.each(DIALECTS)('token budgets (%s)', (dialect) => {
  // 2026-12-30 22:00 UTC: two hours before a midnight, a day and two hours before a month's end.
  const clock = manualClock(Date.parse('2026-12-30T22:00:00.000Z'))
  const prefix = `wpbud${dialect[0]}${RUN}_`
  let a: FastifyInstance
  let b: FastifyInstance | undefined
  let cleanup: () => Promise<void>
  let fake: FakeProvider
  let redisProxy: TcpProxy | undefined
  let redis: Redis | undefined
  let n = 0

  beforeAll(async () => {
    fake = await startFakeProvider(() => ({ json: { id: 'x', object: 'chat.completion', created: 1, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'no usage here' }, finish_reason: 'stop' }] } }))
    const db = await freshDatabase(dialect, `gw_budgets_${dialect}_${RUN}`)
    cleanup = db.cleanup
    const env: Record<string, string> = {
      DATABASE_URL: db.url, WP_TABLE_PREFIX: prefix, AI_BUDGETS: BUDGETS, RATE_LIMIT_MAX: '0', DEDUPE_WINDOW_SECONDS: '0',
      AI_MODELS: JSON.stringify({ 'no-usage': { provider: 'openai', url: fake.baseUrl('nousage') } }),
    }
    if (dialect === 'mysql') {
      redisProxy = await startTcpProxy({ targetHost: new URL(REDIS_URL).hostname, targetPort: Number(new URL(REDIS_URL).port || 6379) })
      env.REDIS_URL = `redis://127.0.0.1:${redisProxy.port}`
      redis = new Redis(REDIS_URL)
    }
    a = await buildApp(testConfig(env), { logger: false, startWorkers: false, clock })
    if (dialect === 'mysql') b = await buildApp(testConfig(env), { logger: false, startWorkers: false, clock, migrate: false })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await redisProxy?.close()
    if (redis) {
      const keys = await redis.keys(`wpaig:${prefix}:*`)
      if (keys.length > 0) await redis.del(...keys)
      redis.disconnect()
    }
    await fake?.close()
    await cleanup?.()
  })

  const token = (sub: string) => bearer({ sub }, { nowMs: clock.now() })
  const create = async (app: FastifyInstance, sub: string, body: unknown = BODY(++n)) =>
    app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...(await token(sub)), 'content-type': 'application/json' }, payload: JSON.stringify(body) })
  const usage = async (sub: string) => (await a.inject({ method: 'GET', url: `${BASE}/usage`, headers: await token(sub) })).json().windows as { scope: string; window: string; limit: number; used: number; reserved: number; resets_at: string }[]
  const dayOf = async (sub: string) => (await usage(sub)).find((w) => w.scope === 'default' && w.window === 'day')!
  const usageRows = async (owner: string) => a.db.db.selectFrom('ai_usage').selectAll().where('owner_key', '=', owner).execute()
  /** Creates until one is refused; the statuses. */
  const fill = async (sub: string, apps: FastifyInstance[] = [a]) => {
    const statuses: number[] = []
    for (let i = 0; statuses.at(-1) !== 429 && i < 20; i++) statuses.push((await create(apps[i % apps.length]!, sub)).statusCode)
    return statuses
  }

  it('reserves each create\'s worst case and refuses the one that would pass the limit, with Retry-After and data.budget', async () => {
    expect(await fill('11')).toEqual([202, 202, 202, 202, 429])
    const refused = await create(a, '11')
    expect(refused.statusCode).toBe(429)
    const body = refused.json()
    expect(body.code).toBe('ai_budget_exhausted')
    expect(body.data.status).toBe(429)
    expect(body.data.budget).toEqual({ scope: 'default', window: 'day', limit: DAY_LIMIT, used: 0, reserved: 4 * RESERVE, resets_at: '2026-12-31T00:00:00.000Z' })
    // Two hours to the UTC midnight.
    expect(Number(refused.headers['retry-after'])).toBe(2 * 3600)
    expect(await dayOf('11')).toMatchObject({ used: 0, reserved: 4 * RESERVE, limit: DAY_LIMIT })
    // Another user has a budget of their own; user 77's is unlimited.
    expect((await create(a, '12')).statusCode).toBe(202)
    expect(await fill('77')).toEqual(Array<number>(20).fill(202))
  })

  it('settles each job to what its provider calls cost, freeing the rest of the reservation', async () => {
    while ((await a.pool.runOnce()) > 0) { /* drain */ }
    const day = await dayOf('11')
    expect(day).toMatchObject({ used: 4 * BILLED, reserved: 0 })
    const rows = await usageRows('u:11')
    expect(rows.map((r) => [String(r.day).slice(0, 10), Number(r.tokens), Number(r.jobs)])).toEqual([['2026-12-30', 4 * BILLED, 4]])
    // 16 used: three more reservations fit under 100, the fourth does not.
    expect(await fill('11')).toEqual([202, 202, 202, 429])
  })

  it('a replay reserves nothing', async () => {
    const key = { 'idempotency-key': `replay-${dialect}` }
    const first = await a.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...(await token('13')), ...key, 'content-type': 'application/json' }, payload: JSON.stringify(BODY(1)) })
    expect(first.statusCode).toBe(202)
    const before = await dayOf('13')
    for (let i = 0; i < 5; i++) {
      const again = await a.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...(await token('13')), ...key, 'content-type': 'application/json' }, payload: JSON.stringify(BODY(1)) })
      expect(again.statusCode).toBe(200)
    }
    expect(await dayOf('13')).toEqual(before)
  })

  it('a job canceled before any provider call is charged 0, and its reservation is released', async () => {
    const created = await create(a, '14')
    const id = created.json().job_id as number
    expect((await dayOf('14')).reserved).toBe(RESERVE)
    expect((await a.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers: await token('14') })).statusCode).toBe(200)
    expect(await dayOf('14')).toMatchObject({ used: 0, reserved: 0 })
    expect((await usageRows('u:14')).map((r) => [Number(r.tokens), Number(r.jobs)])).toEqual([[0, 1]])
  })

  it('a call answered without usage is charged its reservation, never 0, and counted', async () => {
    const created = await create(a, '15', { ...BODY(++n), model: 'no-usage' })
    expect(created.statusCode).toBe(202)
    while ((await a.pool.runOnce()) > 0) { /* drain */ }
    const job = await a.db.db.selectFrom('ai_jobs').select(['status', 'billed_tokens', 'reserved_tokens']).where('id', '=', created.json().job_id).executeTakeFirstOrThrow()
    expect(job).toMatchObject({ status: 'succeeded', reserved_tokens: 0 })
    expect(Number(job.billed_tokens)).toBe(RESERVE)
    expect((await dayOf('15'))).toMatchObject({ used: RESERVE, reserved: 0 })
    const metrics = (await a.inject({ method: 'GET', url: '/metrics' })).body
    expect(Number(/ai_gateway_unmetered_calls_total (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1)
  })

  it('starts a new day at the UTC midnight, while the month keeps counting; and a new month at the month\'s end', async () => {
    expect(await fill('16')).toEqual([202, 202, 202, 202, 429])
    while ((await a.pool.runOnce()) > 0) { /* drain */ }
    clock.set(Date.parse('2026-12-31T00:00:01.000Z'))
    const month = (await usage('16')).find((w) => w.window === 'month' && w.scope === 'default')!
    expect(month).toMatchObject({ used: 4 * BILLED, reserved: 0, resets_at: '2027-01-01T00:00:00.000Z' })
    expect(await dayOf('16')).toMatchObject({ used: 0, reserved: 0, resets_at: '2027-01-01T00:00:00.000Z' })
    // The month has 250 - 16 = 234 left; the new day allows 100 of it.
    expect(await fill('16')).toEqual([202, 202, 202, 202, 429])
    while ((await a.pool.runOnce()) > 0) { /* drain */ }
    clock.set(Date.parse('2027-01-01T00:00:01.000Z'))
    const january = await usage('16')
    expect(january.find((w) => w.window === 'month' && w.scope === 'default')).toMatchObject({ used: 0, reserved: 0, resets_at: '2027-02-01T00:00:00.000Z' })
    expect(await fill('16')).toEqual([202, 202, 202, 202, 429])
    // The jobs count in the windows of their own created_at.
    expect((await usageRows('u:16')).map((r) => String(r.day).slice(0, 10)).sort()).toEqual(['2026-12-30', '2026-12-31'])
  })

  if (dialect === 'mysql') {
    it('two replicas sharing Redis share every counter', async () => {
      clock.set(Date.parse('2027-01-05T10:00:00.000Z'))
      expect(await fill('21', [a, b!])).toEqual([202, 202, 202, 202, 429])
      expect(await dayOf('21')).toMatchObject({ reserved: 4 * RESERVE })
    })

    it('counters deleted from Redis between creates are rebuilt from the database before they are used', async () => {
      clock.set(Date.parse('2027-01-06T10:00:00.000Z'))
      expect((await create(a, '22')).statusCode).toBe(202)
      expect((await create(b!, '22')).statusCode).toBe(202)
      while ((await a.pool.runOnce()) > 0) { /* drain */ }
      expect((await create(a, '22')).statusCode).toBe(202)
      // Only this test's keys: other test files share this Redis.
      const keys = await redis!.keys(`wpaig:${prefix}:bud:*`)
      expect(keys.length).toBeGreaterThan(0)
      await redis!.del(...keys)
      // 2 settled (8 used) + 1 open (22 reserved): three more fit, the fourth does not.
      expect(await dayOf('22')).toMatchObject({ used: 2 * BILLED, reserved: RESERVE })
      expect(await fill('22', [b!, a])).toEqual([202, 202, 202, 429])
    })

    it('with Redis cut off, checks read the database: creates on both replicas at once never pass the limit', async () => {
      clock.set(Date.parse('2027-01-07T10:00:00.000Z'))
      await redisProxy!.pause()
      try {
        const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => create(i % 2 ? b! : a, '23')))
        const statuses = answers.map((r) => r.statusCode).sort()
        expect(statuses).toEqual([202, 202, 202, 202, 429, 429, 429, 429, 429, 429])
        for (const r of answers.filter((x) => x.statusCode === 429)) expect(r.json().code).toBe('ai_budget_exhausted')
        const open = await a.db.db.selectFrom('ai_jobs').select((eb) => eb.fn.sum<number>('reserved_tokens').as('r')).where('owner_key', '=', 'u:23').executeTakeFirstOrThrow()
        expect(Number(open.r)).toBe(4 * RESERVE)
      } finally {
        redisProxy!.resume()
      }
      // Back on Redis: the counters that missed the reservations made meanwhile are loaded again.
      let day
      for (let i = 0; i < 50; i++) {
        try {
          day = await dayOf('23')
          if (day.reserved === 4 * RESERVE) break
        } catch { /* Redis reconnecting */ }
        await new Promise((r) => setTimeout(r, 100))
      }
      expect(day).toMatchObject({ reserved: 4 * RESERVE })
      expect((await create(a, '23')).statusCode).toBe(429)
    })
  }
})

describe('the admin page\'s budget chart (SQLite)', () => {
  it('lists the users closest to a limit, with their window, used and reserved tokens', async () => {
    const clock = manualClock(Date.parse('2027-02-10T12:00:00.000Z'))
    const db = await freshDatabase('sqlite', `gw_budgets_top_${RUN}`)
    const app = await buildApp(testConfig({ DATABASE_URL: db.url, AI_BUDGETS: JSON.stringify({ default: { tokens_per_day: 100 }, users: { 9: { tokens_per_day: 1000 } } }), RATE_LIMIT_MAX: '0' }), { logger: false, startWorkers: false, clock })
    try {
      let k = 0
      const post = async (sub: string) => app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...(await bearer({ sub }, { nowMs: clock.now() })), 'content-type': 'application/json' }, payload: BODY(++k) })
      for (const sub of ['8', '8', '8', '9', '9', '10']) expect((await post(sub)).statusCode).toBe(202)
      while ((await app.pool.runOnce()) > 0) { /* settle them */ }
      expect((await post('8')).statusCode).toBe(202)
      const stats = await readAdminStats(app, { fromMs: clock.now() - 86_400_000, toMs: clock.now() + 86_400_000 })
      expect(stats.budgets?.top_users).toEqual([
        { user_id: 8, scope: 'default', window: 'day', limit: 100, used: 3 * BILLED, reserved: RESERVE },
        { user_id: 10, scope: 'default', window: 'day', limit: 100, used: BILLED, reserved: 0 },
        { user_id: 9, scope: 'user:9', window: 'day', limit: 1000, used: 2 * BILLED, reserved: 0 },
      ])
    } finally {
      await app.close()
      await db.cleanup()
    }
  })
})
