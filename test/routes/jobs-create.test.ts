import { createHash } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { SignJWT } from 'jose'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { insertJob } from '../../src/db/jobs-repository.js'
import { inputHash } from '../../src/jobs/job-request.js'
import { bearer, buildTestApp, DIALECTS, signToken, TOKEN_SECRET, type TestApp } from '../helpers.js'

const BASE = '/wp-json/ai/v1'
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** RFC 8785 for the values used here (strings, integers, short decimals, objects, arrays): keys sorted by UTF-16 code units. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined)
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

/** An object nested `levels` deep: `{ a: { a: … { a: 1 } } }` with `levels` objects. */
function nested(levels: number): Record<string, unknown> {
  let value: unknown = 1
  for (let i = 0; i < levels; i++) value = { a: value }
  return value as Record<string, unknown>
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex')

/** Each test acts as its own WordPress user, so no test sees another's jobs, dedupe window or rate limit. */
let nextUser = 100
const freshUser = (): Promise<Record<string, string>> => bearer({ sub: String(nextUser++) })

interface StoredJob {
  id: number
  user_id: number
  owner_key: string
  idempotency_key: string
  input_hash: string
  request_id: string
  status: string
}

async function storedJob(t: TestApp, id: number): Promise<StoredJob | undefined> {
  // Read the row itself, not the API's view of it.
  const table = sql.id(`${t.config.tablePrefix}ai_jobs`)
  const r = await sql<StoredJob>`SELECT id, user_id, owner_key, idempotency_key, input_hash, request_id, status FROM ${table} WHERE id = ${id}`.execute(t.app.db.db)
  return r.rows[0]
}

async function countJobs(t: TestApp): Promise<number> {
  const table = sql.id(`${t.config.tablePrefix}ai_jobs`)
  const r = await sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM ${table}`.execute(t.app.db.db)
  return Number(r.rows[0]!.n)
}

function post(app: FastifyInstance, headers: Record<string, string>, payload: unknown) {
  return app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { 'content-type': 'application/json', ...headers }, payload: typeof payload === 'string' ? payload : JSON.stringify(payload) })
}

function expectWpError(res: { statusCode: number; json(): any }, status: number, code: string): { code: string; message: string; data: { status: number; field?: string } } {
  expect(res.statusCode).toBe(status)
  const body = res.json()
  expect(body).toMatchObject({ code, data: { status } })
  expect(typeof body.message).toBe('string')
  expect(body.message.length).toBeGreaterThan(0)
  return body
}

describe.each(DIALECTS)('POST /jobs (%s)', (dialect) => {
  let t: TestApp

  beforeAll(async () => {
    t = await buildTestApp({
      dialect,
      name: `gw_t2_jobs_create_${dialect}`,
      env: {
        REQUEST_MAX_BYTES: '4096',
        AI_MAX_TOKENS: '1000',
        AI_MODELS: JSON.stringify({ 'echo-large': { provider: 'echo' } }),
        RATE_LIMIT_MAX: '1000',
      },
    })
  })
  afterAll(async () => {
    await t?.close()
  })

  describe('a new job', () => {
    it('answers 202 with Location and { job_id, status, request_id }', async () => {
      const headers = await freshUser()
      const res = await post(t.app, headers, { input: 'Write a haiku about WordPress' })
      expect(res.statusCode).toBe(202)
      const body = res.json()
      expect(Object.keys(body).sort()).toEqual(['job_id', 'request_id', 'status'])
      expect(Number.isInteger(body.job_id)).toBe(true)
      expect(body.job_id).toBeGreaterThan(0)
      // A JSON integer, not a string that looks like one.
      expect(res.body).toMatch(new RegExp(`"job_id":${body.job_id}[,}]`))
      expect(body.status).toBe('pending')
      expect(body.request_id).toBe(res.headers['x-request-id'])
      expect(res.headers.location).toBe(`${t.config.publicUrl}/wp-json/ai/v1/jobs/${body.job_id}`)

      const row = await storedJob(t, body.job_id)
      expect(row?.status).toBe('pending')
      expect(row?.owner_key).toBe(`u:${nextUser - 1}`)
      expect(Number(row?.user_id)).toBe(nextUser - 1)

      const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${body.job_id}`, headers })
      expect(read.statusCode).toBe(200)
      expect(read.json()).toMatchObject({ job_id: body.job_id, status: 'pending', model: 'echo' })
    })

    it('accepts messages instead of input, and an allowed non-default model', async () => {
      const headers = await freshUser()
      const res = await post(t.app, headers, {
        model: 'echo-large',
        messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }, { role: 'user', content: 'Again' }],
        params: { temperature: 0, top_p: 1, max_tokens: 1000, stop: ['\n'] },
        metadata: { post_id: 42 },
      })
      expect(res.statusCode).toBe(202)
      const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${res.json().job_id}`, headers })
      expect(read.json().model).toBe('echo-large')
    })
  })

  describe('X-Request-Id', () => {
    it('keeps a well-formed client request id and stores it on the job', async () => {
      const headers = await freshUser()
      const given = 'wp.req_01:ABC-9'
      const res = await post(t.app, { ...headers, 'x-request-id': given }, { input: 'request id kept' })
      expect(res.statusCode).toBe(202)
      expect(res.headers['x-request-id']).toBe(given)
      expect(res.json().request_id).toBe(given)
      expect((await storedJob(t, res.json().job_id))?.request_id).toBe(given)
      const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${res.json().job_id}`, headers })
      expect(read.json().request_id).toBe(given)
    })

    it.each([
      ['has spaces', 'bad id with spaces'],
      ['is too long', 'a'.repeat(129)],
      ['has a slash', 'abc/def'],
    ])('replaces a client request id that %s', async (_why, given) => {
      const headers = await freshUser()
      const res = await post(t.app, { ...headers, 'x-request-id': given }, { input: `request id replaced ${given.length}` })
      expect(res.statusCode).toBe(202)
      const id = res.headers['x-request-id'] as string
      expect(id).not.toBe(given)
      expect(id).toMatch(REQUEST_ID)
      expect(res.json().request_id).toBe(id)
      expect((await storedJob(t, res.json().job_id))?.request_id).toBe(id)
    })

    it('keeps a 128-character request id (the upper bound)', async () => {
      const given = 'r'.repeat(128)
      const res = await post(t.app, { ...(await freshUser()), 'x-request-id': given }, { input: 'max length request id' })
      expect(res.headers['x-request-id']).toBe(given)
    })
  })

  describe('validation: 400 ai_invalid_request naming the field', () => {
    const cases: [string, unknown, string][] = [
      ['neither input nor messages', { model: 'echo' }, 'input'],
      ['both input and messages', { input: 'x', messages: [{ role: 'user', content: 'x' }] }, 'messages'],
      ['empty input', { input: '' }, 'input'],
      ['input that is not a string', { input: 42 }, 'input'],
      ['messages that is not an array', { messages: { role: 'user', content: 'x' } }, 'messages'],
      ['empty messages', { messages: [] }, 'messages'],
      ['a message with a bad role', { messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].role'],
      ['a message with an extra key', { messages: [{ role: 'user', content: 'x', name: 'bob' }] }, 'messages[0].name'],
      ['a message without content', { messages: [{ role: 'user', content: 'ok' }, { role: 'user' }] }, 'messages[1].content'],
      ['an unknown top-level field', { input: 'x', callback: 'http://evil.example' }, 'callback'],
      ['a model that is not allowed', { input: 'x', model: 'gpt-4o' }, 'model'],
      ['an unknown params key', { input: 'x', params: { seed: 1 } }, 'params.seed'],
      ['params that is not an object', { input: 'x', params: [1] }, 'params'],
      ['max_tokens over AI_MAX_TOKENS', { input: 'x', params: { max_tokens: 1001 } }, 'params.max_tokens'],
      ['max_tokens that is not an integer', { input: 'x', params: { max_tokens: 10.5 } }, 'params.max_tokens'],
      ['temperature above 2', { input: 'x', params: { temperature: 2.5 } }, 'params.temperature'],
      ['temperature below 0', { input: 'x', params: { temperature: -0.1 } }, 'params.temperature'],
      ['temperature that is a string', { input: 'x', params: { temperature: '1' } }, 'params.temperature'],
      ['metadata over 2 KB', { input: 'x', metadata: { note: 'm'.repeat(2100) } }, 'metadata'],
      ['metadata that is not an object', { input: 'x', metadata: 'note' }, 'metadata'],
      ['metadata nested 9 levels', { input: 'x', metadata: nested(9) }, 'metadata'],
      ['an array nested 9 levels inside metadata', { input: 'x', metadata: { list: [[[[[[[[1]]]]]]]] } }, 'metadata'],
      ['an idempotency key over 255 characters', { input: 'x', idempotency_key: 'k'.repeat(256) }, 'idempotency_key'],
      ['an empty idempotency key', { input: 'x', idempotency_key: '' }, 'idempotency_key'],
      ['an idempotency key with a control character', { input: 'x', idempotency_key: 'abc\u0001def' }, 'idempotency_key'],
      ['an idempotency key with non-ASCII', { input: 'x', idempotency_key: 'clé' }, 'idempotency_key'],
      ['a JSON array body', [{ input: 'x' }], 'body'],
      ['a JSON string body', 'just text', 'body'],
      ['a JSON null body', null, 'body'],
    ]

    it.each(cases)('refuses %s', async (_why, payload, field) => {
      const before = await countJobs(t)
      const res = await post(t.app, await freshUser(), JSON.stringify(payload))
      const body = expectWpError(res, 400, 'ai_invalid_request')
      expect(body.message).toContain(field)
      expect(body.data.field).toBe(field)
      // Bad input never leaves a row behind.
      expect(await countJobs(t)).toBe(before)
    })

    it('refuses an Idempotency-Key header over 255 characters', async () => {
      const res = await post(t.app, { ...(await freshUser()), 'idempotency-key': 'h'.repeat(256) }, { input: 'x' })
      expect(expectWpError(res, 400, 'ai_invalid_request').message).toContain('Idempotency-Key')
    })

    it('refuses a header key and a body key that differ', async () => {
      const res = await post(t.app, { ...(await freshUser()), 'idempotency-key': 'key-a' }, { input: 'x', idempotency_key: 'key-b' })
      expect(expectWpError(res, 400, 'ai_invalid_request').message).toContain('idempotency_key')
    })

    it('accepts a header key and a body key that are the same', async () => {
      const res = await post(t.app, { ...(await freshUser()), 'idempotency-key': 'same-key' }, { input: 'x', idempotency_key: 'same-key' })
      expect(res.statusCode).toBe(202)
    })

    it('accepts the boundary values: max_tokens = AI_MAX_TOKENS, temperature 2, 2 KB of metadata, a 255-character key', async () => {
      const metadata = { note: 'm'.repeat(2048 - JSON.stringify({ note: '' }).length) }
      expect(Buffer.byteLength(JSON.stringify(metadata))).toBe(2048)
      const res = await post(t.app, await freshUser(), { input: 'boundaries', params: { max_tokens: 1000, temperature: 2 }, metadata, idempotency_key: `${'~'.repeat(254)} ` })
      expect(res.statusCode).toBe(202)
    })

    it('refuses metadata nested thousands of levels deep while parsing, before anything recursive sees it', async () => {
      const before = await countJobs(t)
      // 4 KB (this suite's REQUEST_MAX_BYTES) holds 1,000 levels in two bytes each.
      const deep = `{"input":"x","metadata":${'['.repeat(1000)}${']'.repeat(1000)}}`
      const res = await post(t.app, await freshUser(), deep)
      const body = expectWpError(res, 400, 'ai_invalid_request')
      expect(body.data.field).toBe('body')
      expect(body.message).toMatch(/nested more than 64 levels/)
      // Depth counts brackets, not bracket characters inside strings.
      expect((await post(t.app, await freshUser(), { input: `${'['.repeat(1000)}`, metadata: { note: '{'.repeat(1000) } })).statusCode).toBe(202)
      expect(await countJobs(t)).toBe(before + 1)
    })

    it('accepts metadata nested exactly 8 levels', async () => {
      expect((await post(t.app, await freshUser(), { input: 'eight levels', metadata: nested(8) })).statusCode).toBe(202)
    })

    it('refuses a body that is not JSON', async () => {
      const before = await countJobs(t)
      const res = await post(t.app, await freshUser(), '{"input": "unterminated')
      const body = expectWpError(res, 400, 'ai_invalid_request')
      expect(body.message).toContain('body')
      expect(res.headers['x-request-id']).toMatch(REQUEST_ID)
      expect(await countJobs(t)).toBe(before)
    })
  })

  describe('413 ai_payload_too_large', () => {
    it('refuses a body over REQUEST_MAX_BYTES, and accepts one just under it', async () => {
      const headers = await freshUser()
      const before = await countJobs(t)
      const big = await post(t.app, headers, { input: 'x'.repeat(5000) })
      expectWpError(big, 413, 'ai_payload_too_large')
      expect(big.headers['x-request-id']).toMatch(REQUEST_ID)
      expect(await countJobs(t)).toBe(before)

      const fits = await post(t.app, headers, { input: 'y'.repeat(4000) })
      expect(fits.statusCode).toBe(202)
    })
  })

  describe('idempotency keys', () => {
    it('replays the same key with the same input: 200, the full job, Idempotent-Replayed and Location', async () => {
      const auth = await freshUser()
      const headers = { ...auth, 'idempotency-key': 'order-1234' }
      const first = await post(t.app, headers, { input: 'Summarise post 1234' })
      expect(first.statusCode).toBe(202)
      expect(first.headers['idempotent-replayed']).toBeUndefined()
      const id = first.json().job_id

      const again = await post(t.app, headers, { input: 'Summarise post 1234' })
      expect(again.statusCode).toBe(200)
      expect(again.headers['idempotent-replayed']).toBe('true')
      expect(again.headers.location).toBe(`${t.config.publicUrl}/wp-json/ai/v1/jobs/${id}`)
      const job = again.json()
      expect(job).toMatchObject({ job_id: id, status: 'pending', model: 'echo', attempts: 0, result: null, error: null, request_id: first.json().request_id })
      expect(Object.keys(job).sort()).toEqual(['attempts', 'created_at', 'error', 'job_id', 'model', 'request_id', 'result', 'status', 'updated_at', 'usage'])

      // The body's key is the same key as the header's.
      const viaBody = await post(t.app, auth, { input: 'Summarise post 1234', idempotency_key: 'order-1234' })
      expect(viaBody.statusCode).toBe(200)
      expect(viaBody.json().job_id).toBe(id)
    })

    it('answers 422 ai_idempotency_key_reused for the same key with different input, and creates nothing', async () => {
      const headers = { ...(await freshUser()), 'idempotency-key': 'reused-key' }
      expect((await post(t.app, headers, { input: 'first input' })).statusCode).toBe(202)
      const before = await countJobs(t)
      expectWpError(await post(t.app, headers, { input: 'second input' }), 422, 'ai_idempotency_key_reused')
      // Different params are different input too.
      expectWpError(await post(t.app, headers, { input: 'first input', params: { temperature: 1 } }), 422, 'ai_idempotency_key_reused')
      expect(await countJobs(t)).toBe(before)
    })

    it('scopes keys per owner: one client key used by two owners makes two jobs', async () => {
      const key = { 'idempotency-key': 'shared-client-key' }
      const a = await post(t.app, { ...(await freshUser()), ...key }, { input: 'cross-user' })
      const b = await post(t.app, { ...(await freshUser()), ...key }, { input: 'cross-user' })
      const anon = await post(t.app, { ...(await bearer({ sub: 0, sid: 'visitor-x-0123456789' })), ...key }, { input: 'cross-user' })
      expect([a.statusCode, b.statusCode, anon.statusCode]).toEqual([202, 202, 202])
      const ids = new Set([a.json().job_id, b.json().job_id, anon.json().job_id])
      expect(ids.size).toBe(3)
    })

    it('a replay only ever returns the caller\'s own job, even when another owner\'s row holds that stored key', async () => {
      // A row of another owner under exactly the stored key this caller's key maps to, as a seed
      // row holding a raw client key could: the replay path must not hand it over.
      const victim = nextUser++
      const caller = nextUser++
      const stolenKey = sha256(`u:${caller}:colliding-key`)
      const now = new Date().toISOString().replace('T', ' ').slice(0, 23)
      const victimJob = await insertJob(t.app.db.db, {
        user_id: victim, owner_key: `u:${victim}`, status: 'succeeded', input_hash: inputHash({ model: 'echo', input: 'private', params: {} }),
        request_json: JSON.stringify({ model: 'echo', input: 'private', params: {} }), result_json: JSON.stringify({ output: 'the victim\'s secret' }),
        idempotency_key: stolenKey, model: 'echo', request_id: 'r', created_at: now, updated_at: now, run_after: now,
      })
      const before = await countJobs(t)
      for (const input of ['private', 'anything else']) {
        const res = await post(t.app, { ...(await bearer({ sub: String(caller) })), 'idempotency-key': 'colliding-key' }, { input })
        expectWpError(res, 422, 'ai_idempotency_key_reused')
        expect(res.body).not.toContain('secret')
        expect(res.body).not.toContain(String(victimJob))
      }
      expect(await countJobs(t)).toBe(before)
    })

    it('stores hex(sha256(owner_key ":" client_key)) as the key', async () => {
      const user = nextUser
      const res = await post(t.app, { ...(await freshUser()), 'idempotency-key': 'Key With Spaces!' }, { input: 'stored key' })
      const row = await storedJob(t, res.json().job_id)
      expect(row?.idempotency_key).toBe(sha256(`u:${user}:Key With Spaces!`))

      const anon = await post(t.app, { ...(await bearer({ sub: 0, sid: 'sid-123-0123456789ab' })), 'idempotency-key': 'k1' }, { input: 'stored key anon' })
      const anonRow = await storedJob(t, anon.json().job_id)
      expect(anonRow?.owner_key).toBe('s:sid-123-0123456789ab')
      expect(Number(anonRow?.user_id)).toBe(0)
      expect(anonRow?.idempotency_key).toBe(sha256('s:sid-123-0123456789ab:k1'))
    })

    it('stores a unique 64-hex key when the client sends none', async () => {
      const res = await post(t.app, await freshUser(), { input: 'no key' })
      const row = await storedJob(t, res.json().job_id)
      expect(row?.idempotency_key).toMatch(/^[0-9a-f]{64}$/)
    })
  })

  describe('the dedupe window', () => {
    it('returns the recent job for an identical request without a key (200 replay)', async () => {
      const headers = await freshUser()
      const first = await post(t.app, headers, { input: 'dedupe me', params: { temperature: 0.5 } })
      expect(first.statusCode).toBe(202)
      const again = await post(t.app, headers, { params: { temperature: 0.5 }, input: 'dedupe me' })
      expect(again.statusCode).toBe(200)
      expect(again.headers['idempotent-replayed']).toBe('true')
      expect(again.headers.location).toBe(first.headers.location)
      expect(again.json().job_id).toBe(first.json().job_id)

      // A different input, or another owner, is a new job.
      expect((await post(t.app, headers, { input: 'dedupe me too' })).statusCode).toBe(202)
      expect((await post(t.app, await freshUser(), { input: 'dedupe me', params: { temperature: 0.5 } })).statusCode).toBe(202)
    })

    it('leaves a request with a new client key alone: it is a new job, and that key replays it', async () => {
      const headers = await freshUser()
      const first = await post(t.app, headers, { input: 'regenerate me' })
      expect(first.statusCode).toBe(202)
      // Same input, a key never used before: the client asks for a new job ("regenerate").
      const keyed = await post(t.app, { ...headers, 'idempotency-key': 'regen-1' }, { input: 'regenerate me' })
      expect(keyed.statusCode).toBe(202)
      expect(keyed.json().job_id).not.toBe(first.json().job_id)
      // Its retry must find the job under that key, inside the window or after it.
      const retry = await post(t.app, { ...headers, 'idempotency-key': 'regen-1' }, { input: 'regenerate me' })
      expect(retry.statusCode).toBe(200)
      expect(retry.json().job_id).toBe(keyed.json().job_id)
      // A keyless repeat still merges with the newest identical job.
      const keyless = await post(t.app, headers, { input: 'regenerate me' })
      expect(keyless.statusCode).toBe(200)
      expect(keyless.json().job_id).toBe(keyed.json().job_id)
    })
  })

  describe('input_hash', () => {
    it('is sha256 of the RFC 8785 canonical JSON of { model, input, params }, with the resolved model', async () => {
      const input = 'Héllo ✓ "quoted" \\ back\nslash'
      const params = { top_p: 0.9, max_tokens: 100, temperature: 0.7, stop: ['END', '\u0007'] }
      const res = await post(t.app, await freshUser(), { input, params })
      const expected = sha256(canonical({ model: 'echo', input, params }))
      expect((await storedJob(t, res.json().job_id))?.input_hash).toBe(expected)
      // Spelled out once, so a broken `canonical` above cannot hide a broken hash.
      expect(canonical({ model: 'echo', input: 'a', params: { temperature: 0.5, max_tokens: 5 } })).toBe('{"input":"a","model":"echo","params":{"max_tokens":5,"temperature":0.5}}')
    })

    it('covers messages, and params defaults to {}', async () => {
      const messages = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }]
      const res = await post(t.app, await freshUser(), { messages: messages.map((m) => ({ content: m.content, role: m.role })) })
      const expected = sha256(canonical({ model: 'echo', messages, params: {} }))
      expect((await storedJob(t, res.json().job_id))?.input_hash).toBe(expected)
    })

    it('does not depend on the key order of the request body', async () => {
      const a = await post(t.app, await freshUser(), '{"input":"order","model":"echo-large","params":{"temperature":1,"max_tokens":7},"metadata":{"a":1,"b":2}}')
      const b = await post(t.app, await freshUser(), '{"params":{"max_tokens":7,"temperature":1},"metadata":{"b":2,"a":1},"model":"echo-large","input":"order"}')
      expect([a.statusCode, b.statusCode]).toEqual([202, 202])
      const ha = (await storedJob(t, a.json().job_id))?.input_hash
      const hb = (await storedJob(t, b.json().job_id))?.input_hash
      expect(ha).toBe(hb)
      expect(ha).toBe(sha256(canonical({ model: 'echo-large', input: 'order', params: { temperature: 1, max_tokens: 7 } })))
      // Metadata is not part of the input, but the model is.
      const c = await post(t.app, await freshUser(), { input: 'order', params: { temperature: 1, max_tokens: 7 } })
      expect((await storedJob(t, c.json().job_id))?.input_hash).not.toBe(ha)
    })
  })

  describe('401 ai_unauthorized', () => {
    const now = () => Math.floor(Date.now() / 1000)
    const sign = (claims: Record<string, unknown>, alg = 'HS256', secret = TOKEN_SECRET) =>
      new SignJWT(claims).setProtectedHeader({ alg, typ: 'JWT' }).sign(new TextEncoder().encode(secret))

    const cases: [string, () => Promise<Record<string, string>>][] = [
      ['no credentials', async () => ({})],
      ['a garbage bearer token', async () => ({ authorization: 'Bearer not.a.jwt' })],
      ['an empty bearer', async () => ({ authorization: 'Bearer ' })],
      ['an unknown scheme', async () => ({ authorization: 'Token abc' })],
      ['a token signed with another secret', () => bearer({ sub: '5' }, { secret: 'another-secret-another-secret-xx' })],
      ['an expired token', () => bearer({ sub: '5' }, { nowMs: Date.now() - 7200_000, ttlSeconds: 3600 })],
      ['an HS384 token', () => bearer({ sub: '5' }, { alg: 'HS384' })],
      ['a token without exp', async () => ({ authorization: `Bearer ${await sign({ sub: '5', iat: now() })}` })],
      ['a token living more than 24 h after iat', async () => ({ authorization: `Bearer ${await sign({ sub: '5', iat: now(), exp: now() + 24 * 3600 + 60 })}` })],
      ['a token without iat living more than 24 h', async () => ({ authorization: `Bearer ${await sign({ sub: '5', exp: now() + 25 * 3600 })}` })],
      ['a sub=0 token without sid', () => bearer({ sub: '0' })],
      ['a sub=0 token with an empty sid', () => bearer({ sub: 0, sid: '' })],
      // SPEC §5: 16–128 of A-Z a-z 0-9 _ -, so no owner key can be spelled two ways.
      ['a sub=0 token whose sid holds a colon', () => bearer({ sub: 0, sid: 'visitor-0123456789:x' })],
      ['a sub=0 token whose sid holds a dot', () => bearer({ sub: 0, sid: 'visitor.0123456789ab' })],
      ['a sub=0 token with a 15-character sid', () => bearer({ sub: 0, sid: 'a'.repeat(15) })],
      ['a sub=0 token with a 129-character sid', () => bearer({ sub: 0, sid: 'a'.repeat(129) })],
      ['a token without sub', () => bearer({})],
      ['a token with a non-numeric sub', () => bearer({ sub: 'admin' })],
      ['an unsigned (alg none) token', async () => {
        const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
        return { authorization: `Bearer ${enc({ alg: 'none', typ: 'JWT' })}.${enc({ sub: '1', iat: now(), exp: now() + 60 })}.` }
      }],
    ]

    it.each(cases)('for %s', async (_why, headers) => {
      const before = await countJobs(t)
      const res = await post(t.app, await headers(), { input: 'who am I' })
      expectWpError(res, 401, 'ai_unauthorized')
      expect(res.headers['x-request-id']).toMatch(REQUEST_ID)
      expect(await countJobs(t)).toBe(before)
      const read = await t.app.inject({ method: 'GET', url: `${BASE}/jobs`, headers: await headers() })
      expectWpError(read, 401, 'ai_unauthorized')
    })

    it('accepts the same kinds of tokens when they are right (the cases above can pass)', async () => {
      expect((await post(t.app, await bearer({ sub: '5' }), { input: 'ok 1' })).statusCode).toBe(202)
      expect((await post(t.app, await bearer({ sub: 5 }), { input: 'ok 2' })).statusCode).toBe(202)
      expect((await post(t.app, { authorization: `Bearer ${await sign({ sub: '5', iat: now(), exp: now() + 24 * 3600 })}` }, { input: 'ok 3' })).statusCode).toBe(202)
      expect((await post(t.app, await bearer({ sub: '0', sid: 'anon-1-0123456789abc' }), { input: 'ok 4' })).statusCode).toBe(202)
      expect((await post(t.app, await bearer({ sub: '0', sid: 'a'.repeat(16) }), { input: 'ok 4a' })).statusCode).toBe(202)
      expect((await post(t.app, await bearer({ sub: '0', sid: `${'A-z_9'.repeat(25)}xyz` }), { input: 'ok 4b' })).statusCode).toBe(202)
      expect((await post(t.app, { authorization: `bearer ${await signToken({ sub: '5' })}` }, { input: 'ok 5' })).statusCode).toBe(202)
    })
  })

  describe('rate limit (RATE_LIMIT_MAX=3)', () => {
    let rl: TestApp
    beforeAll(async () => {
      rl = await buildTestApp({ dialect, name: `gw_t2_jobs_create_rl_${dialect}`, env: { RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_SECONDS: '600' } })
    })
    afterAll(async () => {
      await rl?.close()
    })

    it('answers the 4th create with 429, Retry-After and the IETF headers; replays do not count', async () => {
      const headers = await bearer({ sub: '77' })
      const first = await post(rl.app, { ...headers, 'idempotency-key': 'rl-1' }, { input: 'rl one' })
      expect(first.statusCode).toBe(202)
      expect(first.headers['ratelimit-policy']).toBe('"create";q=3;w=600')
      expect(first.headers.ratelimit).toMatch(/^"create";r=2;t=\d+$/)

      // Replays by key and by the dedupe window: 200 and free.
      for (let i = 0; i < 3; i++) {
        expect((await post(rl.app, { ...headers, 'idempotency-key': 'rl-1' }, { input: 'rl one' })).statusCode).toBe(200)
        expect((await post(rl.app, headers, { input: 'rl one' })).statusCode).toBe(200)
      }
      const second = await post(rl.app, headers, { input: 'rl two' })
      expect(second.statusCode).toBe(202)
      expect(second.headers.ratelimit).toMatch(/^"create";r=1;t=\d+$/)
      expect((await post(rl.app, headers, { input: 'rl three' })).statusCode).toBe(202)

      const before = await countJobs(rl)
      const fourth = await post(rl.app, headers, { input: 'rl four' })
      expectWpError(fourth, 429, 'ai_rate_limited')
      const retryAfter = Number(fourth.headers['retry-after'])
      expect(Number.isInteger(retryAfter)).toBe(true)
      expect(retryAfter).toBeGreaterThanOrEqual(1)
      expect(retryAfter).toBeLessThanOrEqual(600)
      expect(fourth.headers['ratelimit-policy']).toBe('"create";q=3;w=600')
      expect(fourth.headers.ratelimit).toBe(`"create";r=0;t=${retryAfter}`)
      expect(await countJobs(rl)).toBe(before)

      // A replay still works while limited, and another owner is not limited.
      const replay = await post(rl.app, { ...headers, 'idempotency-key': 'rl-1' }, { input: 'rl one' })
      expect(replay.statusCode).toBe(200)
      expect(replay.json().job_id).toBe(first.json().job_id)
      expect((await post(rl.app, await bearer({ sub: '78' }), { input: 'rl four' })).statusCode).toBe(202)
    })
  })

  describe('DEDUPE_WINDOW_SECONDS=0', () => {
    let nd: TestApp
    beforeAll(async () => {
      nd = await buildTestApp({ dialect, name: `gw_t2_jobs_create_nodedupe_${dialect}`, env: { DEDUPE_WINDOW_SECONDS: '0' } })
    })
    afterAll(async () => {
      await nd?.close()
    })

    it('creates a new job for each identical request without a key', async () => {
      const headers = await bearer({ sub: '5' })
      const a = await post(nd.app, headers, { input: 'same again' })
      const b = await post(nd.app, headers, { input: 'same again' })
      expect([a.statusCode, b.statusCode]).toEqual([202, 202])
      expect(b.json().job_id).not.toBe(a.json().job_id)
      const [ra, rb] = [await storedJob(nd, a.json().job_id), await storedJob(nd, b.json().job_id)]
      expect(ra?.input_hash).toBe(rb?.input_hash)
      expect(ra?.idempotency_key).not.toBe(rb?.idempotency_key)
      // Keys still replay.
      const k = { ...headers, 'idempotency-key': 'nd-key' }
      const c = await post(nd.app, k, { input: 'same again' })
      const d = await post(nd.app, k, { input: 'same again' })
      expect([c.statusCode, d.statusCode]).toEqual([202, 200])
      expect(d.json().job_id).toBe(c.json().job_id)
    })
  })
})
