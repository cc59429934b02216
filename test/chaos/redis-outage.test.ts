import type { FastifyInstance, InjectOptions } from 'fastify'
import { Redis } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, REDIS_URL, testConfig, waitFor } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { RUN } from '../support/run-tag.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { checkEndState, slowCompletions, waitUntilTerminal, type ProviderSpan } from './end-state.js'

/**
 * Redis cut off under load and back (SPEC §6 "Redis down"): creates and reads go on without a
 * 5xx, rate limiting falls back to this process's memory meanwhile (and is counted), and every
 * job ends terminal. Redis is reached through a TCP proxy; its keys carry this run's table prefix.
 */
const DB = `gw_chaos_redis_${RUN}`
const PREFIX = `wp${RUN}_chaos_`
const RATE_LIMIT = 5
const OUTAGE_MS = 3_000
const BASE = '/wp-json/ai/v1'
/** A create that takes longer than this hangs: a failure, never a timing assertion. */
const ANSWER_WITHIN_MS = 10_000
/** Far longer than a memory fallback takes (milliseconds), so a create still waiting then is held by Redis. */
const PARTITION_ANSWER_MS = 5_000

type Res = Awaited<ReturnType<FastifyInstance['inject']>>

let redisProxy: TcpProxy
let fake: FakeProvider
let spans: ProviderSpan[]
let app: FastifyInstance | undefined
let inspect: DatabaseHandle | undefined

beforeAll(async () => {
  const url = await freshMysqlDatabase(DB)
  const redis = new URL(REDIS_URL)
  redisProxy = await startTcpProxy({ targetHost: redis.hostname, targetPort: Number(redis.port || 6379) })
  const provider = slowCompletions(100)
  spans = provider.spans
  fake = await startFakeProvider(provider.behavior)
  app = await buildApp(testConfig({
    DATABASE_URL: url,
    WP_TABLE_PREFIX: PREFIX,
    REDIS_URL: redisProxy.via(REDIS_URL),
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('redis-outage'),
    AI_DEFAULT_MODEL: 'gpt-test',
    WORKER_CONCURRENCY: '4',
    JOB_LEASE_SECONDS: '5',
    RATE_LIMIT_MAX: String(RATE_LIMIT),
    SHUTDOWN_GRACE_SECONDS: '2',
  }), { logger: false, poolOptions: { pollMs: 100, reapEveryMs: 500 } })
  inspect = await openDatabase({ url, prefix: PREFIX })
}, 60_000)

afterAll(async () => {
  redisProxy?.resume()
  await app?.close()
  await inspect?.close()
  await redisProxy?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
  // The gateway's keys (`wpaig:<prefix>:…`) of this run, straight on Redis.
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await redis.connect()
    for (let cursor = '0'; ;) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `wpaig:${PREFIX}:*`, 'COUNT', 500)
      if (keys.length > 0) await redis.del(...keys)
      cursor = next
      if (cursor === '0') break
    }
  } finally {
    redis.disconnect()
  }
})

/** `app.inject`, failing the test if no answer comes within ANSWER_WITHIN_MS. */
async function answered(request: InjectOptions, what: string): Promise<Res> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      app!.inject(request),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ANSWER_WITHIN_MS} ms`)), ANSWER_WITHIN_MS)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

async function fallbacks(operation: string): Promise<number> {
  const text = (await app!.inject({ method: 'GET', url: '/metrics' })).body
  return Number(new RegExp(`ai_gateway_store_fallback_total\\{operation="${operation}"\\} (\\d+)`).exec(text)?.[1] ?? 0)
}

describe('Redis goes away under load and comes back', () => {
  const accepted = new Set<number>()
  let nextOwner = 100

  /** One owner's creates (never over the rate limit) and a read of each. */
  async function owner(creates: number, label: string, problems: string[]): Promise<void> {
    const headers = await bearer({ sub: String(nextOwner++) })
    for (let n = 0; n < creates; n++) {
      const res = await answered({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: `${label} ${nextOwner} ${n}` } }, `create (${label})`)
      if (res.statusCode !== 202) {
        problems.push(`create (${label}): ${res.statusCode} ${res.body.slice(0, 200)}`)
        continue
      }
      const id = (res.json() as { job_id: number }).job_id
      accepted.add(id)
      const read = await answered({ method: 'GET', url: `${BASE}/jobs/${id}`, headers }, `read (${label})`)
      if (read.statusCode !== 200) problems.push(`read (${label}): ${read.statusCode} ${read.body.slice(0, 200)}`)
    }
  }

  it('creates and reads go on with every connection reset, limits fall back to memory, and every job finishes', async () => {
    const problems: string[] = []
    await Promise.all(Array.from({ length: 4 }, () => owner(3, 'before', problems)))
    expect((await app!.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200)
    const consumeFallbacksBefore = await fallbacks('admitCreate')

    await redisProxy.pause()
    const downSince = Date.now()
    // Under load while Redis is down: several owners, and one that goes over the limit.
    const greedy = await bearer({ sub: '999' })
    const greedyStatuses: number[] = []
    const greedyClient = (async () => {
      for (let n = 0; n < RATE_LIMIT + 2; n++) {
        const res = await answered({ method: 'POST', url: `${BASE}/jobs`, headers: greedy, payload: { input: `greedy ${n}` } }, 'greedy create')
        greedyStatuses.push(res.statusCode)
        if (res.statusCode === 202) accepted.add((res.json() as { job_id: number }).job_id)
        else if (res.statusCode !== 429 || (res.json() as { code: string }).code !== 'ai_rate_limited' || !res.headers['retry-after']) problems.push(`greedy: ${res.statusCode} ${res.body}`)
      }
    })()
    await Promise.all([greedyClient, ...Array.from({ length: 6 }, () => owner(3, 'during', problems))])
    expect((await app!.inject({ method: 'GET', url: '/readyz' })).statusCode, 'readyz says the store is unreachable').toBe(503)
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, OUTAGE_MS - (Date.now() - downSince))))
    const consumeFallbacksDuring = await fallbacks('admitCreate')
    redisProxy.resume()

    // Meanwhile the limit was kept in memory: the greedy owner got exactly RATE_LIMIT creates.
    expect(greedyStatuses).toEqual([...Array(RATE_LIMIT).fill(202), 429, 429])
    expect(consumeFallbacksDuring - consumeFallbacksBefore, 'rate-limit checks served from memory').toBeGreaterThanOrEqual(6 * 3 + RATE_LIMIT + 2)

    await waitFor(async () => ((await app!.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? true : undefined), 15_000, 'Redis to be reachable again')
    await Promise.all(Array.from({ length: 4 }, () => owner(3, 'after', problems)))
    // Back on Redis: the new owners' checks were not served from memory.
    expect(await fallbacks('admitCreate')).toBe(consumeFallbacksDuring)
    expect(problems).toEqual([])

    await waitUntilTerminal(inspect!, accepted, 40_000)
    await checkEndState(inspect!, { accepted, spans, exact: true })
    console.info(`redis outage: ${accepted.size} jobs, ${consumeFallbacksDuring - consumeFallbacksBefore} rate-limit checks in memory, ${spans.length} provider calls`)
  }, 60_000)

  // Redis that stops answering without closing its connections (a partition, a stalled proxy):
  // commands time out (src/store/redis-store.ts COMMAND_TIMEOUT_MS), so the create falls back to
  // memory instead of hanging until Redis answers again (SPEC §6).
  it('creates go on while Redis stops answering without closing connections', async () => {
    const headers = await bearer({ sub: String(nextOwner++) })
    await redisProxy.pause('blackhole')
    const create = app!.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'while Redis is partitioned' } })
    try {
      let timer: NodeJS.Timeout | undefined
      const res = await Promise.race([create, new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`create while Redis is partitioned: no answer within ${PARTITION_ANSWER_MS} ms`)), PARTITION_ANSWER_MS)
      })]).finally(() => clearTimeout(timer))
      expect(res.statusCode).toBe(202)
    } finally {
      redisProxy.resume()
      // The held request goes on once Redis answers; its job is run like the others.
      const late = await create
      if (late.statusCode === 202) accepted.add((late.json() as { job_id: number }).job_id)
    }
  }, 30_000)
})
