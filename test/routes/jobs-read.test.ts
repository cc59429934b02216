import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { claimJobs, finishJob } from '../../src/db/jobs-repository.js'
import { jobIdOf } from '../../src/jobs/read-job.js'
import { JobIdParams } from '../../src/schemas/common.js'
import { bearer, buildTestApp, DIALECTS, type TestApp } from '../helpers.js'

const BASE = '/wp-json/ai/v1'
const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

// A whole second plus 678 ms: the clock never moves unless a test moves it.
const START = Math.floor(Date.now() / 1000) * 1000 + 678

describe('job ids in paths', () => {
  const pattern = new RegExp((JobIdParams.properties.id as unknown as { pattern: string }).pattern)
  const parse = (raw: string): number => {
    if (!pattern.test(raw)) throw new Error('refused by the params schema')
    return jobIdOf(raw)
  }
  it('takes positive safe integers only, so a huge id never rounds onto another job', () => {
    expect(parse('1')).toBe(1)
    expect(parse('9007199254740991')).toBe(Number.MAX_SAFE_INTEGER)
    for (const bad of ['9007199254740993', '9999999999999999', '0', '01', '-1', '1.0', ' 1', 'abc', '']) {
      expect(() => parse(bad), bad).toThrow()
    }
  })
})

describe.each(DIALECTS)('reading jobs (%s)', (dialect) => {
  const clock = manualClock(START)
  let t: TestApp
  let app: FastifyInstance
  let nextUser = 200
  // Tokens are checked against the injected clock.
  const token = (claims: Record<string, unknown>) => bearer(claims, { nowMs: clock.now() })
  const freshUser = () => token({ sub: String(nextUser++) })

  const create = async (headers: Record<string, string>, payload: Record<string, unknown>): Promise<number> => {
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload })
    expect(res.statusCode).toBe(202)
    return res.json().job_id as number
  }
  const get = (id: number | string, headers: Record<string, string>, extra: Record<string, string> = {}) =>
    app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: { ...headers, ...extra } })
  const list = (headers: Record<string, string>, query = '') => app.inject({ method: 'GET', url: `${BASE}/jobs${query}`, headers })
  /** Runs every pending job (of every test so far) so a claim below takes only the job it means to. */
  const drain = async () => {
    while ((await app.pool.runOnce()) > 0) { /* next batch */ }
  }

  beforeAll(async () => {
    t = await buildTestApp({ dialect, name: `gw_t2_jobs_read_${dialect}`, clock, env: { RATE_LIMIT_MAX: '0' } })
    app = t.app
  })
  afterAll(async () => {
    await t?.close()
  })

  describe('GET /jobs/:id', () => {
    it('returns the Job JSON of SPEC §4 for a succeeded job', async () => {
      const headers = await freshUser()
      const id = await create({ ...headers, 'x-request-id': 'read-shape-1' }, { messages: [{ role: 'system', content: 'Be brief' }, { role: 'user', content: 'Echo this back' }] })
      await drain()
      const res = await get(id, headers)
      expect(res.statusCode).toBe(200)
      const job = res.json()
      expect(Object.keys(job).sort()).toEqual(['attempts', 'created_at', 'error', 'job_id', 'model', 'request_id', 'result', 'status', 'updated_at', 'usage'])
      expect(job.job_id).toBe(id)
      expect(res.body).toMatch(new RegExp(`"job_id":${id}[,}]`))
      expect(job.status).toBe('succeeded')
      expect(job.model).toBe('echo')
      expect(job.created_at).toMatch(ISO_MS)
      expect(job.updated_at).toMatch(ISO_MS)
      expect(job.created_at).toBe(new Date(START).toISOString())
      expect(job.attempts).toBe(1)
      expect(job.error).toBeNull()
      expect(job.request_id).toBe('read-shape-1')
      // `result` is the parsed result_json, not a string.
      expect(job.result).toEqual({
        output: 'Echo this back',
        finish_reason: 'stop',
        provider: 'echo',
        model: 'echo',
        usage: { input_tokens: expect.any(Number), output_tokens: 4 },
        latency_ms: expect.any(Number),
      })
      expect(job.usage).toEqual({ input_tokens: job.result.usage.input_tokens, output_tokens: 4, provider_ms: expect.any(Number), worker_ms: expect.any(Number) })
      for (const v of Object.values(job.usage)) expect(Number.isInteger(v)).toBe(true)
    })

    it('shows a pending job with null result, error and usage', async () => {
      const headers = await freshUser()
      const id = await create(headers, { input: 'still waiting' })
      const job = (await get(id, headers)).json()
      expect(job).toMatchObject({ job_id: id, status: 'pending', attempts: 0, result: null, error: null })
      expect(job.usage).toEqual({ input_tokens: null, output_tokens: null, provider_ms: null, worker_ms: null })
    })

    it('sends ETag and Cache-Control: private, max-age=0', async () => {
      const headers = await freshUser()
      const id = await create(headers, { input: 'etag headers' })
      const res = await get(id, headers)
      expect(res.headers['cache-control']).toBe('private, max-age=0')
      expect(res.headers.etag).toMatch(/^"[^"]+"$/)
    })

    it('answers If-None-Match with 304 for the current tag, in a list, weak, or *; 200 for an old one', async () => {
      const headers = await freshUser()
      const id = await create(headers, { input: 'conditional' })
      const etag = (await get(id, headers)).headers.etag as string

      for (const value of [etag, `"zzz", ${etag}`, `"a","b" , ${etag}`, `W/${etag}`, `"nope", W/${etag}`, '*']) {
        const res = await get(id, headers, { 'if-none-match': value })
        expect(res.statusCode, value).toBe(304)
        expect(res.body).toBe('')
        expect(res.headers.etag).toBe(etag)
        expect(res.headers['cache-control']).toBe('private, max-age=0')
      }
      const other = await get(id, headers, { 'if-none-match': '"0.0", W/"1.1"' })
      expect(other.statusCode).toBe(200)
      expect(other.json().job_id).toBe(id)
    })

    it('checks ownership before If-None-Match: another owner with the right ETag gets 404', async () => {
      const owner = await freshUser()
      const id = await create(owner, { input: 'mine' })
      const etag = (await get(id, owner)).headers.etag as string
      const intruder = await freshUser()
      for (const value of [etag, '*']) {
        const res = await get(id, intruder, { 'if-none-match': value })
        expect(res.statusCode).toBe(404)
        expect(res.json()).toMatchObject({ code: 'ai_not_found', data: { status: 404 } })
        expect(res.headers.etag).toBeUndefined()
      }
    })

    it('answers 404 for another user\'s job, a missing id and an id that is not a number', async () => {
      const owner = await freshUser()
      const id = await create(owner, { input: 'private' })
      const other = await freshUser()
      const res = await get(id, other)
      expect(res.statusCode).toBe(404)
      expect(res.json()).toEqual({ code: 'ai_not_found', message: expect.any(String), data: { status: 404 } })
      expect(res.body).not.toContain('private')
      for (const bad of [String(id + 100000), 'abc', '0', '-1', '1.5', '1e3', '99999999999999999999']) {
        const r = await get(bad, owner)
        expect(r.statusCode, bad).toBe(404)
        expect(r.json().data.status).toBe(404)
      }
      expect((await get(id, owner)).statusCode).toBe(200)
    })

    it('keeps two anonymous visitors (sub 0) apart by sid', async () => {
      const a = await token({ sub: 0, sid: 'visitor-a-0123456789' })
      const b = await token({ sub: '0', sid: 'visitor-b-0123456789' })
      const ja = await create(a, { input: 'anon a' })
      const jb = await create(b, { input: 'anon b' })
      expect((await get(ja, a)).statusCode).toBe(200)
      expect((await get(jb, b)).statusCode).toBe(200)
      expect((await get(ja, b)).statusCode).toBe(404)
      expect((await get(jb, a)).statusCode).toBe(404)
      const la = (await list(a)).json().jobs.map((j: { job_id: number }) => j.job_id)
      const lb = (await list(b)).json().jobs.map((j: { job_id: number }) => j.job_id)
      expect(la).toEqual([ja])
      expect(lb).toEqual([jb])
      // A logged-in user 0 does not exist; user 1 is not an anonymous visitor either.
      expect((await get(ja, await token({ sub: '1' }))).statusCode).toBe(404)
    })

    it('changes the ETag pending → running → succeeded within one millisecond (repository claim and finish)', async () => {
      await drain()
      const headers = await freshUser()
      const id = await create(headers, { input: 'same millisecond' })
      const pending = await get(id, headers)
      expect(pending.json().status).toBe('pending')

      const claimed = await claimJobs(app.db, { limit: 1, nowMs: clock.now(), leaseOwner: 'test-worker', leaseMs: 60_000 })
      expect(claimed.map((r) => Number(r.id))).toEqual([id])
      const running = await get(id, headers)
      expect(running.json().status).toBe('running')
      expect(running.json().attempts).toBe(1)
      // Same updated_at, different ETag: the tag follows the version counter, not the time.
      expect(running.json().updated_at).toBe(pending.json().updated_at)
      expect(running.headers.etag).not.toBe(pending.headers.etag)
      expect((await get(id, headers, { 'if-none-match': pending.headers.etag as string })).statusCode).toBe(200)
      expect(running.headers['server-timing']).not.toMatch(/worker;|provider;/)

      const written = await finishJob(app.db.db, id, 'test-worker', {
        status: 'succeeded', resultJson: JSON.stringify({ output: 'done' }), errorText: null,
        providerMs: 123, workerMs: 456, inputTokens: 3, outputTokens: 4,
      }, clock.now())
      expect(written).toBe(true)
      const done = await get(id, headers)
      expect(done.json()).toMatchObject({ status: 'succeeded', result: { output: 'done' }, usage: { input_tokens: 3, output_tokens: 4, provider_ms: 123, worker_ms: 456 } })
      expect(done.json().updated_at).toBe(pending.json().updated_at)
      expect(new Set([pending.headers.etag, running.headers.etag, done.headers.etag]).size).toBe(3)
      expect((await get(id, headers, { 'if-none-match': running.headers.etag as string })).statusCode).toBe(200)
      expect((await get(id, headers, { 'if-none-match': done.headers.etag as string })).statusCode).toBe(304)

      // Server-Timing carries the stored worker and provider durations.
      const timing = done.headers['server-timing'] as string
      expect(timing).toMatch(/(^|, )db;dur=\d+(\.\d+)?(,|$)/)
      expect(timing).toContain('worker;dur=456')
      expect(timing).toContain('provider;dur=123')
    })

    it('changes the ETag pending → succeeded within one millisecond through the pool', async () => {
      await drain()
      const headers = await freshUser()
      const id = await create(headers, { input: 'pool in one millisecond' })
      const before = await get(id, headers)
      expect(await app.pool.runOnce()).toBe(1)
      const after = await get(id, headers)
      expect(after.json().status).toBe('succeeded')
      expect(after.json().updated_at).toBe(before.json().updated_at)
      expect(after.headers.etag).not.toBe(before.headers.etag)
      expect((await get(id, headers, { 'if-none-match': before.headers.etag as string })).statusCode).toBe(200)
      const timing = after.headers['server-timing'] as string
      expect(timing).toMatch(/worker;dur=\d+/)
      expect(timing).toMatch(/provider;dur=\d+/)
    })
  })

  describe('GET /jobs', () => {
    it('pages through the caller\'s jobs newest first with next_cursor, null on the last page', async () => {
      const headers = await freshUser()
      const ids: number[] = []
      for (let i = 0; i < 5; i++) {
        ids.push(await create(headers, { input: `page item ${i}` }))
        // The first three are a millisecond apart; the last three share one millisecond, so the id breaks the tie.
        if (i < 2) clock.advance(1)
      }
      // Another user's jobs never show up.
      const otherId = await create(await freshUser(), { input: 'someone else' })

      const seen: number[] = []
      let cursor: string | null = null
      let pages = 0
      do {
        const query = `?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
        const res = await list(headers, query)
        expect(res.statusCode).toBe(200)
        const body = res.json() as { jobs: { job_id: number; status: string; created_at: string }[]; next_cursor: string | null }
        expect(Object.keys(body).sort()).toEqual(['jobs', 'next_cursor'])
        expect(body.jobs.length).toBeLessThanOrEqual(2)
        for (const j of body.jobs) expect(j.created_at).toMatch(ISO_MS)
        seen.push(...body.jobs.map((j) => j.job_id))
        cursor = body.next_cursor
        pages++
        if (pages === 3) expect(cursor).toBeNull()
        else expect(typeof cursor).toBe('string')
      } while (cursor !== null && pages < 10)
      expect(pages).toBe(3)
      expect(seen).toEqual([...ids].reverse())
      expect(seen).not.toContain(otherId)

      // The default limit (20) returns them all, with no next page.
      const all = (await list(headers)).json()
      expect(all.jobs.map((j: { job_id: number }) => j.job_id)).toEqual([...ids].reverse())
      expect(all.next_cursor).toBeNull()
      // Exactly one full page: still no next page.
      const exact = (await list(headers, '?limit=5')).json()
      expect(exact.jobs).toHaveLength(5)
      expect(exact.next_cursor).toBeNull()
    })

    it('filters by status', async () => {
      await drain()
      const headers = await freshUser()
      const done = [await create(headers, { input: 'status a' }), await create(headers, { input: 'status b' })]
      await drain()
      const waiting = [await create(headers, { input: 'status c' })]
      const ids = async (q: string) => (await list(headers, q)).json().jobs.map((j: { job_id: number }) => j.job_id)
      expect(await ids('?status=succeeded')).toEqual([...done].reverse())
      expect(await ids('?status=pending')).toEqual(waiting)
      expect(await ids('?status=failed')).toEqual([])
      expect(await ids('?status=canceled')).toEqual([])
      expect(await ids('')).toEqual([...waiting, ...[...done].reverse()])
      const bad = await list(headers, '?status=done')
      expect(bad.statusCode).toBe(400)
      expect(bad.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
      expect(bad.json().message).toContain('status')
    })

    it('refuses a limit outside 1..100 and a malformed cursor with 400', async () => {
      const headers = await freshUser()
      await create(headers, { input: 'limits' })
      for (const limit of ['0', '101', 'abc', '-1', '2.5', '1000']) {
        const res = await list(headers, `?limit=${limit}`)
        expect(res.statusCode, limit).toBe(400)
        expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
        expect(res.json().message).toContain('limit')
      }
      for (const limit of ['1', '100']) expect((await list(headers, `?limit=${limit}`)).statusCode).toBe(200)

      const garbage = Buffer.from(JSON.stringify({ x: 1 })).toString('base64url')
      const sqlish = Buffer.from(JSON.stringify(["2020-01-01 00:00:00' OR 1=1 --", 5])).toString('base64url')
      for (const cursor of ['abc', garbage, sqlish, '%%%']) {
        const res = await list(headers, `?limit=2&cursor=${encodeURIComponent(cursor)}`)
        expect(res.statusCode, cursor).toBe(400)
        expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
        expect(res.json().message).toContain('cursor')
      }
    })
  })

  describe('URL forms', () => {
    it('serves plain permalinks: /?rest_route= and /index.php?rest_route=', async () => {
      const headers = await freshUser()
      const id = await create(headers, { input: 'plain permalinks' })
      const pretty = await get(id, headers)
      for (const url of [`/?rest_route=/ai/v1/jobs/${id}`, `/index.php?rest_route=/ai/v1/jobs/${id}`, `/?rest_route=%2Fai%2Fv1%2Fjobs%2F${id}`]) {
        const res = await app.inject({ method: 'GET', url, headers })
        expect(res.statusCode, url).toBe(200)
        expect(res.json()).toEqual(pretty.json())
        expect(res.headers.etag).toBe(pretty.headers.etag)
      }
      const listed = await app.inject({ method: 'GET', url: '/?rest_route=/ai/v1/jobs&limit=1', headers })
      expect(listed.statusCode).toBe(200)
      expect(listed.json().jobs.map((j: { job_id: number }) => j.job_id)).toEqual([id])

      const created = await app.inject({ method: 'POST', url: '/index.php?rest_route=/ai/v1/jobs', headers, payload: { input: 'created through rest_route' } })
      expect(created.statusCode).toBe(202)
      // Other WordPress routes are not ours.
      const other = await app.inject({ method: 'GET', url: '/?rest_route=/wp/v2/posts', headers })
      expect(other.statusCode).toBe(404)
    })

    it('answers an unknown route with 404 rest_no_route in the WordPress shape', async () => {
      for (const url of [`${BASE}/nope`, '/wp-json/wp/v2/posts', '/nothing-here']) {
        const res = await app.inject({ method: 'GET', url })
        expect(res.statusCode, url).toBe(404)
        expect(res.json()).toEqual({ code: 'rest_no_route', message: expect.any(String), data: { status: 404 } })
      }
    })

    it('puts X-Request-Id on every response, errors and 404s included', async () => {
      const headers = await freshUser()
      const id = await create(headers, { input: 'request ids everywhere' })
      const etag = (await get(id, headers)).headers.etag as string
      const responses = [
        await get(id, headers),
        await get(id, headers, { 'if-none-match': etag }),
        await get(id, await freshUser()),
        await list(headers),
        await list(headers, '?limit=0'),
        await app.inject({ method: 'GET', url: `${BASE}/jobs` }),
        await app.inject({ method: 'GET', url: '/no/such/route' }),
        await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...headers, 'content-type': 'application/json' }, payload: '{bad' }),
        await app.inject({ method: 'GET', url: '/healthz' }),
      ]
      expect(responses.map((r) => r.statusCode)).toEqual([200, 304, 404, 200, 400, 401, 404, 400, 200])
      for (const res of responses) expect(res.headers['x-request-id']).toMatch(REQUEST_ID)
      const ids = new Set(responses.map((r) => r.headers['x-request-id']))
      expect(ids.size).toBe(responses.length)
      const echoed = await app.inject({ method: 'GET', url: '/no/such/route', headers: { 'x-request-id': 'trace-404' } })
      expect(echoed.headers['x-request-id']).toBe('trace-404')
    })

    it('answers a URL the router cannot decode, or an over-long id, in the WordPress shape with X-Request-Id', async () => {
      const headers = { ...(await freshUser()), 'x-request-id': 'trace-bad-url' }
      const bad = await app.inject({ method: 'GET', url: `${BASE}/jobs/%E0%A4%A`, headers })
      expect(bad.statusCode).toBe(400)
      expect(bad.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
      expect(bad.headers['x-request-id']).toBe('trace-bad-url')
      const long = await app.inject({ method: 'GET', url: `${BASE}/jobs/${'1'.repeat(120)}`, headers })
      expect(long.statusCode).toBe(404)
      expect(long.json()).toEqual({ code: 'ai_not_found', message: expect.any(String), data: { status: 404 } })
      expect(long.headers['x-request-id']).toBe('trace-bad-url')
    })
  })

  describe('a subdirectory install (PUBLIC_URL=http://127.0.0.1:3000/blog)', () => {
    let sub: TestApp
    beforeAll(async () => {
      sub = await buildTestApp({ dialect, name: `gw_t2_jobs_read_blog_${dialect}`, env: { PUBLIC_URL: 'http://127.0.0.1:3000/blog' } })
    })
    afterAll(async () => {
      await sub?.close()
    })

    it('serves /blog/wp-json/ai/v1 and builds Location from PUBLIC_URL', async () => {
      const headers = await bearer({ sub: '9' })
      const res = await sub.app.inject({ method: 'POST', url: '/blog/wp-json/ai/v1/jobs', headers, payload: { input: 'in a subdirectory' } })
      expect(res.statusCode).toBe(202)
      const id = res.json().job_id
      expect(res.headers.location).toBe(`http://127.0.0.1:3000/blog/wp-json/ai/v1/jobs/${id}`)

      const read = await sub.app.inject({ method: 'GET', url: `/blog/wp-json/ai/v1/jobs/${id}`, headers })
      expect(read.statusCode).toBe(200)
      expect(read.json().job_id).toBe(id)
      for (const url of [`/blog/?rest_route=/ai/v1/jobs/${id}`, `/blog/index.php?rest_route=/ai/v1/jobs/${id}`]) {
        const plain = await sub.app.inject({ method: 'GET', url, headers })
        expect(plain.statusCode, url).toBe(200)
        expect(plain.json().job_id).toBe(id)
      }
      // The root prefix is not served.
      const root = await sub.app.inject({ method: 'GET', url: `/wp-json/ai/v1/jobs/${id}`, headers })
      expect(root.statusCode).toBe(404)
      expect(root.json().code).toBe('rest_no_route')
    })
  })
})
