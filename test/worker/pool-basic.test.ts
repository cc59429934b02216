import { sql } from 'kysely'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { bearer, buildTestApp, DIALECTS, waitFor, type TestApp } from '../helpers.js'

const BASE = '/wp-json/ai/v1'

interface ResultRow {
  status: string
  attempts: number | string
  result_json: string | null
  error_text: string | null
  lease_owner: string | null
  lease_expires_at: string | null
}

async function row(t: TestApp, id: number): Promise<ResultRow | undefined> {
  const table = sql.id(`${t.config.tablePrefix}ai_jobs`)
  const r = await sql<ResultRow>`SELECT status, attempts, result_json, error_text, lease_owner, lease_expires_at FROM ${table} WHERE id = ${id}`.execute(t.app.db.db)
  return r.rows[0]
}

describe.each(DIALECTS)('worker pool with the echo provider (%s)', (dialect) => {
  describe('driven by runOnce()', () => {
    const clock = manualClock(Math.floor(Date.now() / 1000) * 1000)
    let t: TestApp
    beforeAll(async () => {
      t = await buildTestApp({ dialect, name: `gw_t2_pool_basic_${dialect}`, clock })
    })
    afterAll(async () => {
      await t?.close()
    })
    afterEach(() => {
      // Nothing here starts the pool; runOnce() must not leave one running.
      expect(t.app.pool.isRunning).toBe(false)
      expect(t.app.pool.size).toBe(0)
    })

    it('runs a created job to succeeded with the result shape and one attempt', async () => {
      const headers = await bearer({ sub: '3' }, { nowMs: clock.now() })
      const created = await t.app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'Hello from WordPress', params: { max_tokens: 50 } } })
      expect(created.statusCode).toBe(202)
      const id = created.json().job_id as number
      expect((await row(t, id))?.status).toBe('pending')

      expect(await t.app.pool.runOnce()).toBe(1)
      const stored = await row(t, id)
      expect(stored?.status).toBe('succeeded')
      expect(Number(stored?.attempts)).toBe(1)
      expect(stored?.error_text).toBeNull()
      // The lease is gone once the job is terminal.
      expect(stored?.lease_owner).toBeNull()
      expect(stored?.lease_expires_at).toBeNull()
      const result = JSON.parse(stored!.result_json!)
      expect(Object.keys(result).sort()).toEqual(['finish_reason', 'latency_ms', 'model', 'output', 'provider', 'usage'])
      expect(result).toEqual({
        output: 'Hello from WordPress',
        finish_reason: 'stop',
        provider: 'echo',
        model: 'echo',
        // The echo provider counts one token per 4 UTF-8 bytes, rounded up: 20 bytes.
        usage: { input_tokens: 5, output_tokens: 5 },
        latency_ms: expect.any(Number),
      })
      expect(Number.isInteger(result.latency_ms)).toBe(true)

      const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
      expect(read.json()).toMatchObject({ status: 'succeeded', attempts: 1, result, error: null, usage: { input_tokens: 5, output_tokens: 5 } })

      // Nothing is left to run, and a finished job is never claimed again.
      expect(await t.app.pool.runOnce()).toBe(0)
      expect(Number((await row(t, id))?.attempts)).toBe(1)
    })

    it('runs several jobs in one batch, each exactly once', async () => {
      const headers = await bearer({ sub: '4' }, { nowMs: clock.now() })
      const ids: number[] = []
      for (let i = 0; i < 3; i++) {
        const res = await t.app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { messages: [{ role: 'user', content: `batch ${i}` }] } })
        ids.push(res.json().job_id)
      }
      expect(await t.app.pool.runOnce()).toBe(3)
      for (const [i, id] of ids.entries()) {
        const stored = await row(t, id)
        expect(stored?.status).toBe('succeeded')
        expect(Number(stored?.attempts)).toBe(1)
        expect(JSON.parse(stored!.result_json!).output).toBe(`batch ${i}`)
      }
    })

    it('does not run a job whose run_after is in the future until the clock gets there', async () => {
      const headers = await bearer({ sub: '5' }, { nowMs: clock.now() })
      clock.advance(10_000)
      const res = await t.app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'from the future' } })
      const id = res.json().job_id as number
      clock.advance(-10_000)
      expect(await t.app.pool.runOnce()).toBe(0)
      expect((await row(t, id))?.status).toBe('pending')
      clock.advance(10_000)
      expect(await t.app.pool.runOnce()).toBe(1)
      expect((await row(t, id))?.status).toBe('succeeded')
    })
  })

  describe('a started pool', () => {
    let t: TestApp | undefined
    afterEach(async () => {
      const app = t?.app
      await t?.close()
      t = undefined
      // Closing the app stops the pool: no claim loop outlives its test.
      if (app) expect(app.pool.isRunning).toBe(false)
    })

    it('picks up a new job at once when woken by the create (no runOnce)', async () => {
      t = await buildTestApp({
        dialect,
        name: `gw_t2_pool_basic_started_${dialect}`,
        // The fallback poll is an hour away, so only the create's wake-up can start the job.
        deps: { startWorkers: true, poolOptions: { pollMs: 3_600_000, reapEveryMs: 3_600_000 } },
      })
      const pool = t.app.pool
      expect(pool.isRunning).toBe(true)
      const headers = await bearer({ sub: '6' })
      const created = await t.app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'wake up' } })
      expect(created.statusCode).toBe(202)
      const id = created.json().job_id as number
      const job = await waitFor(async () => {
        const res = await t!.app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
        return res.json().status === 'succeeded' ? res.json() : undefined
      }, 10_000, 'the started pool to finish the job')
      expect(job).toMatchObject({ status: 'succeeded', attempts: 1, result: { output: 'wake up', provider: 'echo' } })

      await t.app.close()
      expect(pool.isRunning).toBe(false)
      expect(pool.size).toBe(0)
    })
  })
})
