/**
 * GET /admin/stats, the admin page's charts: over seeded rows its numbers are the table's (tokens
 * and jobs per day, jobs by status, nearest-rank p50/p95 of the newest samples of each day), the
 * breakers are the registry's, and the range is checked.
 */
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { insertJobs, type NewJobRow } from '../../src/db/jobs-repository.js'
import type { JobStatus } from '../../src/db/schema.js'
import { toDbTime } from '../../src/db/time.js'
import { LATENCY_SAMPLES_PER_DAY, percentile } from '../../src/jobs/admin-stats.js'
import { DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { ADMIN, adminOnly } from '../support/admin-only.js'

const BASE = '/wp-json/ai/v1'
const DAY = 86_400_000
const T0 = Date.parse('2026-06-01T00:00:00.000Z')
// "Now" is in the afternoon of 2026-06-03.
const NOW = T0 + 2 * DAY + 15 * 3_600_000


interface Seed {
  at: number
  status: JobStatus
  input?: number
  output?: number
  ms?: number
}

function row(s: Seed, i: number): NewJobRow & Record<string, unknown> {
  const at = toDbTime(s.at)
  return {
    user_id: i % 3, owner_key: `u:${i % 3}`, status: s.status, input_hash: randomBytes(32).toString('hex'), request_json: '{}',
    idempotency_key: randomBytes(32).toString('hex'), model: 'echo', request_id: `r${i}`, created_at: at, updated_at: at, run_after: at,
  }
}

describe.each(DIALECTS)('GET /admin/stats (%s)', (dialect) => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  const seeds: Seed[] = []
  // Day 1 (2026-06-02): more finished jobs than the samples read per day, latencies rising with time.
  const busy = LATENCY_SAMPLES_PER_DAY + 200

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_admin_stats_${dialect}_${RUN}`)
    cleanup = db.cleanup
    app = await buildApp(testConfig({ DATABASE_URL: db.url }), { logger: false, startWorkers: false, wordpress: adminOnly, clock: manualClock(NOW) })
    // Day 0 (2026-06-01): a few of each status.
    const day0: Seed[] = [
      { at: T0 + 1_000, status: 'succeeded', input: 10, output: 20, ms: 100 },
      { at: T0 + 2_000, status: 'succeeded', input: 11, output: 21, ms: 300 },
      { at: T0 + 3_000, status: 'succeeded', input: 12, output: 22, ms: 200 },
      { at: T0 + 4_000, status: 'failed', input: 5, output: 0, ms: 900 },
      { at: T0 + 5_000, status: 'failed' }, // failed before any provider call: no latency
      { at: T0 + 6_000, status: 'canceled' },
      { at: T0 + 7_000, status: 'pending' },
      { at: T0 + 8_000, status: 'running' },
    ]
    const day1: Seed[] = Array.from({ length: busy }, (_, k) => ({ at: T0 + DAY + k * 1_000, status: 'succeeded' as const, input: 1, output: 2, ms: k + 1 }))
    // Outside the default range (and inside an explicit one), and after it.
    const old: Seed[] = [{ at: T0 - 40 * DAY, status: 'succeeded', input: 1000, output: 1000, ms: 5 }]
    const future: Seed[] = [{ at: T0 + 3 * DAY + 1, status: 'failed', input: 7, output: 7, ms: 7 }]
    seeds.push(...day0, ...day1, ...old, ...future)
    const rows = seeds.map(row)
    for (let i = 0; i < rows.length; i += 500) await insertJobs(app.db, rows.slice(i, i + 500))
    // Usage columns are written by workers; set them as a finished job has them.
    for (const [i, s] of seeds.entries()) {
      if (s.input === undefined && s.ms === undefined) continue
      await app.db.db.updateTable('ai_jobs').set({ input_tokens: s.input ?? null, output_tokens: s.output ?? null, provider_ms: s.ms ?? null })
        .where('idempotency_key', '=', rows[i]!.idempotency_key).execute()
    }
  }, 120_000)
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
  })

  const get = (query = '') => app.inject({ method: 'GET', url: `${BASE}/admin/stats${query}`, headers: ADMIN })

  it('adds up tokens and jobs per UTC day, and counts jobs by status, over the range asked', async () => {
    const res = await get('?from=2026-06-01&to=2026-06-04')
    expect(res.statusCode).toBe(200)
    expect(res.headers['cache-control']).toBe('private, no-store')
    const stats = res.json()
    expect(stats.from).toBe('2026-06-01T00:00:00.000Z')
    expect(stats.to).toBe('2026-06-04T00:00:00.000Z')
    expect(stats.tokens_per_day).toEqual([
      { day: '2026-06-01', input_tokens: 38, output_tokens: 63, jobs: 8 },
      { day: '2026-06-02', input_tokens: busy, output_tokens: 2 * busy, jobs: busy },
      { day: '2026-06-03', input_tokens: 0, output_tokens: 0, jobs: 0 },
    ])
    expect(stats.jobs_by_status).toEqual({ pending: 1, running: 1, succeeded: 3 + busy, failed: 2, canceled: 1 })
    expect(stats.budgets).toBeNull()
    expect(stats.deliveries).toBeNull()
  })

  it('gives nearest-rank p50/p95 of the finished jobs of each day, reading only the newest samples of a busy day', async () => {
    const stats = (await get('?from=2026-06-01&to=2026-06-04')).json()
    // Day 0: succeeded 100, 200, 300 and failed 900; the failure without a provider call has no sample.
    expect(stats.latency_per_day[0]).toEqual({ day: '2026-06-01', p50_ms: 200, p95_ms: 900, samples: 4 })
    // Day 1: the newest LATENCY_SAMPLES_PER_DAY of `busy` jobs, whose latency is their position 1…busy.
    const newest = Array.from({ length: LATENCY_SAMPLES_PER_DAY }, (_, k) => busy - LATENCY_SAMPLES_PER_DAY + 1 + k)
    expect(stats.latency_per_day[1]).toEqual({
      day: '2026-06-02', p50_ms: percentile(newest, 50), p95_ms: percentile(newest, 95), samples: LATENCY_SAMPLES_PER_DAY,
    })
    expect(stats.latency_per_day[1].p50_ms).toBe(busy - LATENCY_SAMPLES_PER_DAY + 500)
    expect(stats.latency_per_day[2]).toEqual({ day: '2026-06-03', p50_ms: null, p95_ms: null, samples: 0 })
  })

  it('defaults to the last 30 UTC days, today included; a range that starts mid-day counts only its part of the day', async () => {
    const stats = (await get()).json()
    expect(stats.tokens_per_day).toHaveLength(30)
    expect(stats.tokens_per_day.at(-1).day).toBe('2026-06-03')
    expect(stats.to).toBe('2026-06-04T00:00:00.000Z')
    // Neither the job 40 days back nor the one after today.
    expect(stats.tokens_per_day.reduce((n: number, d: { jobs: number }) => n + d.jobs, 0)).toBe(8 + busy)

    const part = (await get(`?from=${encodeURIComponent('2026-06-01T00:00:02.500Z')}&to=2026-06-02`)).json()
    expect(part.tokens_per_day).toEqual([{ day: '2026-06-01', input_tokens: 17, output_tokens: 22, jobs: 6 }])
    expect(part.latency_per_day).toEqual([{ day: '2026-06-01', p50_ms: 200, p95_ms: 900, samples: 2 }])
  })

  it("lists this process's circuit breakers as they stand", async () => {
    expect((await get()).json().breakers).toEqual([{ key: 'echo', state: 'closed', consecutive_failures: 0, open_until: null }])
    const breaker = app.providers.breakers()[0]!
    for (let i = 0; i < breaker.failureThreshold; i++) breaker.onFailure(NOW)
    expect((await get()).json().breakers).toEqual([
      { key: 'echo', state: 'open', consecutive_failures: breaker.failureThreshold, open_until: new Date(NOW + breaker.cooldownMs).toISOString() },
    ])
    breaker.onSuccess()
  })

  it('refuses an empty range, one over 92 days, and what is not a date; and anyone but an administrator', async () => {
    expect((await get('?from=2026-06-02&to=2026-06-02')).json()).toMatchObject({ code: 'ai_invalid_request', data: { field: 'from', status: 400 } })
    expect((await get('?from=2026-01-01&to=2026-06-01')).json()).toMatchObject({ code: 'ai_invalid_request', data: { field: 'to', status: 400 } })
    expect((await get('?from=2026-03-01&to=2026-06-01')).statusCode).toBe(200)
    expect((await get('?from=last-week')).json()).toMatchObject({ code: 'ai_invalid_request', data: { field: 'from' } })
    const nobody = await app.inject({ method: 'GET', url: `${BASE}/admin/stats` })
    expect(nobody.statusCode).toBe(401)
  })
})

describe('percentile', () => {
  it('is the nearest rank: the smallest sample with at least p % of them at or below it', () => {
    expect(percentile([], 50)).toBeNull()
    expect(percentile([7], 95)).toBe(7)
    expect(percentile([1, 2, 3, 4], 50)).toBe(2)
    expect(percentile([1, 2, 3, 4], 95)).toBe(4)
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1)
    expect(percentile(hundred, 50)).toBe(50)
    expect(percentile(hundred, 95)).toBe(95)
  })
})
