import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, MYSQL_BASE, testConfig, waitFor } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { RUN } from '../support/run-tag.js'
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js'
import { checkEndState, slowCompletions, waitUntilTerminal, type ProviderSpan } from './end-state.js'

/**
 * MariaDB cut off for a few seconds (every connection reset, through a TCP proxy) while clients
 * create and read jobs and the pool runs them: meanwhile the answers are `503 ai_unavailable`
 * with Retry-After, never a 500; the gateway recovers by itself; a client that got a 503 sends
 * the same create again (same Idempotency-Key) and is answered once the database is back. Every
 * job a client was given ends terminal, once, and ran at most once per claim.
 */
const DB = `gw_chaos_db_outage_${RUN}`
const OUTAGE_MS = 3_000
const CLIENTS = 4
const BASE = '/wp-json/ai/v1'

let proxy: TcpProxy
let fake: FakeProvider
let spans: ProviderSpan[]
let app: FastifyInstance | undefined
let inspect: DatabaseHandle | undefined
let url: string

beforeAll(async () => {
  url = await freshMysqlDatabase(DB)
  const target = new URL(MYSQL_BASE)
  proxy = await startTcpProxy({ targetHost: target.hostname, targetPort: Number(target.port || 3306) })
  const provider = slowCompletions(150)
  spans = provider.spans
  fake = await startFakeProvider(provider.behavior)
  app = await buildApp(testConfig({
    DATABASE_URL: proxy.via(url),
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('db-outage'),
    AI_DEFAULT_MODEL: 'gpt-test',
    WORKER_CONCURRENCY: '4',
    JOB_LEASE_SECONDS: '5',
    JOB_MAX_ATTEMPTS: '3',
    RATE_LIMIT_MAX: '0',
    SHUTDOWN_GRACE_SECONDS: '2',
  }), { logger: false, poolOptions: { pollMs: 100, reapEveryMs: 500 } })
  // Straight to MariaDB, beside the proxy: what the test reads is never cut off.
  inspect = await openDatabase({ url, prefix: 'wp_' })
}, 60_000)

afterAll(async () => {
  proxy?.resume()
  await app?.close()
  await inspect?.close()
  await proxy?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('the database goes away under load and comes back', () => {
  it('answers 503 with Retry-After meanwhile, recovers by itself, and finishes every accepted job', async () => {
    const gateway = app!
    const headers = await bearer({ sub: '31' })
    const accepted = new Map<string, number>()
    const refusals: string[] = []
    let unavailable = 0
    let acceptedAfterOutage = 0
    let phase: 'before' | 'down' | 'after' = 'before'
    let stop = false

    const check503 = (res: Awaited<ReturnType<FastifyInstance['inject']>>, what: string) => {
      const body = res.json() as { code: string; data: { status: number } }
      const retryAfter = Number(res.headers['retry-after'])
      if (body.code !== 'ai_unavailable' || body.data.status !== 503 || !(Number.isInteger(retryAfter) && retryAfter >= 1)) refusals.push(`${what}: 503 ${res.body} Retry-After ${res.headers['retry-after']}`)
      unavailable++
    }

    async function client(c: number): Promise<void> {
      for (let n = 0; !stop; n++) {
        const key = `db-client-${c}-${n}`
        // The same key until it is answered: a 503 means "not stored, try again".
        for (;;) {
          const res = await gateway.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...headers, 'idempotency-key': key }, payload: { input: `client ${c} job ${n}` } })
          if (res.statusCode === 202 || (res.statusCode === 200 && res.headers['idempotent-replayed'] === 'true')) {
            accepted.set(key, (res.json() as { job_id: number }).job_id)
            if (phase === 'after') acceptedAfterOutage++
            break
          }
          if (res.statusCode === 503) check503(res, `create ${key}`)
          else refusals.push(`create ${key}: ${res.statusCode} ${res.body.slice(0, 200)}`)
          if (res.statusCode !== 503) break
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
        // A read of one of this client's jobs, as a page polling it would.
        const mine = [...accepted.values()]
        if (mine.length > 0) {
          const read = await gateway.inject({ method: 'GET', url: `${BASE}/jobs/${mine[n % mine.length]}`, headers })
          if (read.statusCode === 503) check503(read, 'read')
          else if (read.statusCode !== 200) refusals.push(`read: ${read.statusCode} ${read.body.slice(0, 200)}`)
        }
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }

    const clients = Array.from({ length: CLIENTS }, (_, c) => client(c))
    await waitFor(() => (accepted.size >= 10 && fake.calls.length >= 2 ? true : undefined), 20_000, 'load before the outage')

    await proxy.pause()
    phase = 'down'
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS))
    const duringOutage = unavailable
    proxy.resume()
    phase = 'after'
    await waitFor(() => (acceptedAfterOutage >= 8 ? true : undefined), 20_000, 'creates accepted again after the outage')
    stop = true
    await Promise.all(clients)

    expect(duringOutage, '503 answers while the database was down').toBeGreaterThanOrEqual(1)
    expect(refusals, 'no answer but 202, 200 or 503 ai_unavailable with Retry-After').toEqual([])
    expect((await gateway.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200)

    await waitUntilTerminal(inspect!, accepted.values(), 40_000)
    await checkEndState(inspect!, { accepted: accepted.values(), spans, exact: true })
    console.info(`database outage: ${accepted.size} jobs, ${unavailable} answers 503 (${duringOutage} while down), ${spans.length} provider calls`)
  }, 60_000)
})
