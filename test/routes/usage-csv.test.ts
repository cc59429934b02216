/**
 * GET /admin/usage.csv (SPEC §4, issue of the site owner's console): grouped by day, user or
 * model over a date range, its sums match the table, and it streams: an export of 100k groups
 * keeps flat memory.
 */
import type { AddressInfo } from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { insertJobs, type NewJobRow } from '../../src/db/jobs-repository.js'
import { toDbTime } from '../../src/db/time.js'
import { DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { ADMIN, adminOnly } from '../support/admin-only.js'

const BASE = '/wp-json/ai/v1'
// A full collection on demand, for measuring what is held rather than what awaits collection.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const DAY = 86_400_000
const T0 = Date.parse('2026-06-01T00:00:00.000Z')


function job(i: number, overrides: Partial<NewJobRow> = {}): NewJobRow {
  const at = toDbTime(overrides.created_at ? Date.parse(`${overrides.created_at.replace(' ', 'T')}Z`) : T0 + i)
  return {
    user_id: 1, owner_key: 'u:1', status: 'succeeded', input_hash: randomBytes(32).toString('hex'), request_json: '{}',
    idempotency_key: randomBytes(32).toString('hex'), model: 'echo', request_id: `r${i}`, created_at: at, updated_at: at, run_after: at,
    ...overrides,
  }
}

function parseCsv(text: string): Record<string, string>[] {
  const [head, ...lines] = text.trim().split('\n')
  const cols = head!.split(',')
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v.replace(/^"|"$/g, '')])))
}

describe.each(DIALECTS)('GET /admin/usage.csv (%s)', (dialect) => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  const rows: { day: string; user: number; model: string; status: string; input: number; output: number; ms: number }[] = []

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_usage_csv_${dialect}_${RUN}`)
    cleanup = db.cleanup
    app = await buildApp(testConfig({ DATABASE_URL: db.url }), { logger: false, startWorkers: false, wordpress: adminOnly })
    const seeded: NewJobRow[] = []
    const statuses = ['succeeded', 'failed', 'canceled', 'pending', 'running'] as const
    for (let i = 0; i < 300; i++) {
      const dayIndex = i % 3
      const created = T0 + dayIndex * DAY + i * 1000
      const status = statuses[i % 5]!
      const model = i % 2 ? 'echo' : 'gpt-x'
      const user = i % 4
      const input = status === 'succeeded' ? i : 0
      const output = status === 'succeeded' ? 2 * i : 0
      const ms = status === 'succeeded' || status === 'failed' ? 10 + i : 0
      rows.push({ day: new Date(created).toISOString().slice(0, 10), user, model, status, input, output, ms })
      seeded.push({ ...job(i, { created_at: toDbTime(created) }), user_id: user, owner_key: `u:${user}`, status, model })
    }
    await insertJobs(app.db, seeded)
    // Usage columns are written by workers; set them as a finished job has them.
    for (const [i, r] of rows.entries()) {
      if (r.input || r.output || r.ms) {
        await app.db.db.updateTable('ai_jobs').set({ input_tokens: r.input || null, output_tokens: r.output || null, provider_ms: r.ms || null })
          .where('idempotency_key', '=', seeded[i]!.idempotency_key).execute()
      }
    }
  }, 120_000)
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
  })

  const get = (query: string) => app.inject({ method: 'GET', url: `${BASE}/admin/usage.csv${query}`, headers: ADMIN })

  it('groups by day, user and model by default, and every sum matches the table', async () => {
    const res = await get(`?from=2026-06-01&to=2026-06-04`)
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^text\/csv/)
    expect(res.headers['cache-control']).toBe('private, no-store')
    const csv = parseCsv(res.body)
    expect(Object.keys(csv[0]!)).toEqual(['day', 'user_id', 'model', 'jobs', 'pending', 'running', 'succeeded', 'failed', 'canceled', 'input_tokens', 'output_tokens', 'provider_ms'])
    const expected = new Map<string, Record<string, number>>()
    for (const r of rows) {
      const key = `${r.day}|${r.user}|${r.model}`
      const e = expected.get(key) ?? { jobs: 0, pending: 0, running: 0, succeeded: 0, failed: 0, canceled: 0, input_tokens: 0, output_tokens: 0, provider_ms: 0 }
      e.jobs!++
      e[r.status]!++
      e.input_tokens! += r.input
      e.output_tokens! += r.output
      e.provider_ms! += r.ms
      expected.set(key, e)
    }
    expect(csv).toHaveLength(expected.size)
    for (const line of csv) {
      const e = expected.get(`${line.day}|${line.user_id}|${line.model}`)
      expect(e, JSON.stringify(line)).toBeDefined()
      for (const [k, v] of Object.entries(e!)) expect(Number(line[k]), `${k} of ${JSON.stringify(line)}`).toBe(v)
    }
  })

  it.each([
    ['day', ['day']], ['user', ['user_id']], ['model', ['model']], ['model,day', ['day', 'model']],
  ])('groups by %s alone, and the totals are the same', async (group, columns) => {
    const csv = parseCsv((await get(`?from=2026-06-01&to=2026-06-04&group=${group}`)).body)
    expect(Object.keys(csv[0]!).slice(0, columns.length)).toEqual(columns)
    expect(csv.reduce((n, l) => n + Number(l.jobs), 0)).toBe(rows.length)
    expect(csv.reduce((n, l) => n + Number(l.output_tokens), 0)).toBe(rows.reduce((n, r) => n + r.output, 0))
  })

  it('takes the date range, and refuses what is not a date or a group', async () => {
    const oneDay = parseCsv((await get('?from=2026-06-02&to=2026-06-03&group=day')).body)
    expect(oneDay.map((l) => l.day)).toEqual(['2026-06-02'])
    expect(Number(oneDay[0]!.jobs)).toBe(rows.filter((r) => r.day === '2026-06-02').length)
    expect(parseCsv((await get('?from=2027-01-01&to=2027-01-02')).body)).toEqual([])
    expect((await get('?from=yesterday')).json()).toMatchObject({ code: 'ai_invalid_request', data: { field: 'from' } })
    expect((await get('?group=day,owner')).json()).toMatchObject({ code: 'ai_invalid_request', data: { field: 'group' } })
  })
})

describe('a 100k-group export streams with flat memory (MariaDB)', () => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  const COUNT = 100_000

  beforeAll(async () => {
    const db = await freshDatabase('mysql', `gw_usage_csv_big_${RUN}`)
    cleanup = db.cleanup
    app = await buildApp(testConfig({ DATABASE_URL: db.url }), { logger: false, startWorkers: false, wordpress: adminOnly })
    for (let start = 0; start < COUNT; start += 2000) {
      await insertJobs(app.db, Array.from({ length: 2000 }, (_, k) => ({ ...job(start + k), user_id: start + k + 10, owner_key: `u:${start + k + 10}` })))
    }
    await app.listen({ port: 0, host: '127.0.0.1' })
  }, 180_000)
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
  })

  /**
   * Downloads an export slowly (a client on a slow link) and measures what the server keeps alive
   * meanwhile: the heap after a full collection, every few chunks, so garbage waiting to be
   * collected is not mistaken for rows held.
   */
  async function download(group: string): Promise<{ lines: number; chunked: boolean; peakMb: number }> {
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}${BASE}/admin/usage.csv?from=2026-05-31&to=2026-06-02&group=${group}`
    gc()
    const baseline = process.memoryUsage().heapUsed
    let peak = baseline
    const res = await fetch(url, { headers: ADMIN })
    expect(res.status).toBe(200)
    let lines = 0
    let chunks = 0
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      for (const byte of chunk) if (byte === 10) lines++
      if (++chunks % 8 === 0) {
        gc()
        peak = Math.max(peak, process.memoryUsage().heapUsed)
      }
      await new Promise((r) => setImmediate(r))
    }
    return { lines, chunked: res.headers.get('transfer-encoding') === 'chunked', peakMb: (peak - baseline) / 1024 / 1024 }
  }

  it('sends 100k groups as a stream, with the heap no larger than for one group', async () => {
    const one = await download('day')
    const many = await download('user')
    expect(one.lines).toBe(2)
    expect(many.lines).toBe(COUNT + 1)
    expect(many.chunked).toBe(true)
    // Flat: a hundred thousand times the rows, and what is held grows by no more than a few chunks
    // (holding the rows at once keeps about 30 MB alive).
    expect(many.peakMb - one.peakMb).toBeLessThan(8)
  }, 120_000)
})
