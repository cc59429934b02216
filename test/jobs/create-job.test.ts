/**
 * The create path under concurrency (SPEC §3, §4): requests with one key that land in one batch
 * are one job and replays, and the rate-limit hits taken for creates that turn out to be replays
 * are given back, on MariaDB (with Redis) and SQLite (in memory).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bearer, buildTestApp, DIALECTS, REDIS_URL, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const LIMIT = 25

describe.each(DIALECTS)('concurrent creates (%s)', (dialect) => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({
      dialect, name: `gw_create_job_${dialect}_${RUN}`,
      env: { RATE_LIMIT_MAX: String(LIMIT), DEDUPE_WINDOW_SECONDS: '60', ...(dialect === 'mysql' ? { REDIS_URL, WP_TABLE_PREFIX: `wpcj${RUN}_` } : {}) },
    })
  })
  afterAll(async () => {
    await t?.close()
  })

  const post = (headers: Record<string, string>, payload: unknown) =>
    t.app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(payload) })

  it('twenty requests with one key at once: one job, nineteen replays of it, and only one hit on the rate limit', async () => {
    const owner = await bearer({ sub: '71' })
    const answers = await Promise.all(Array.from({ length: 20 }, () => post({ ...owner, 'idempotency-key': 'one-key' }, { input: 'the same request' })))
    const statuses = answers.map((a) => a.statusCode).sort()
    expect(statuses).toEqual([...Array<number>(19).fill(200), 202].sort())
    const created = answers.find((a) => a.statusCode === 202)!.json().job_id as number
    for (const replay of answers.filter((a) => a.statusCode === 200)) {
      expect(replay.headers['idempotent-replayed']).toBe('true')
      expect(replay.json().job_id).toBe(created)
    }
    const rows = await t.app.db.db.selectFrom('ai_jobs').select('id').where('owner_key', '=', 'u:71').execute()
    expect(rows.map((r) => Number(r.id))).toEqual([created])
    // The replays gave their hits back: LIMIT - 1 new creates still fit, and the next is refused.
    const more = []
    for (let i = 0; i < LIMIT; i++) more.push((await post(owner, { input: `new input ${i}` })).statusCode)
    expect(more).toEqual([...Array<number>(LIMIT - 1).fill(202), 429])
  })

  it('identical keyless requests at once inside the dedupe window are merged once the first is stored', async () => {
    const owner = await bearer({ sub: '72' })
    const first = await post(owner, { input: 'dedupe me' })
    expect(first.statusCode).toBe(202)
    const again = await Promise.all(Array.from({ length: 10 }, () => post(owner, { input: 'dedupe me' })))
    expect(again.map((a) => a.statusCode)).toEqual(Array<number>(10).fill(200))
    for (const a of again) expect(a.json().job_id).toBe(first.json().job_id)
  })
})
