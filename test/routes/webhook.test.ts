import { createHash, randomBytes, randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { claimJobs, findJob, type JobRow } from '../../src/db/jobs-repository.js'
import { fromDbTime } from '../../src/db/time.js'
import { retryJob } from '../../src/jobs/retry-job.js'
import { signStandardWebhook, signXAiSignature } from '../../src/webhook/verify-signature.js'
import { bearer, buildTestApp, DIALECTS, REDIS_URL, testConfig, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const WHSEC = `whsec_${randomBytes(24).toString('base64')}`
const PLAIN = 'plain-rotation-secret-2'
const SECRETS = `${WHSEC}, ${PLAIN}`

type Scheme = 'standard' | 'seed'

interface Delivery {
  payload: string
  headers: Record<string, string>
}

/** A signed delivery of `body` (an object is JSON-encoded; a string is sent as is). */
function delivery(body: unknown, options: { scheme?: Scheme; secret?: string; nowMs: number; id?: string } ): Delivery {
  const payload = typeof body === 'string' ? body : JSON.stringify(body)
  const scheme = options.scheme ?? 'standard'
  const secret = options.secret ?? WHSEC
  const seconds = Math.floor(options.nowMs / 1000)
  if (scheme === 'seed') {
    return { payload, headers: { 'content-type': 'application/json', 'x-ai-signature': signXAiSignature(secret, payload), 'x-ai-timestamp': String(seconds) } }
  }
  const signed = signStandardWebhook({ secret, id: options.id ?? `msg_${randomUUID()}`, timestampSeconds: seconds, body: payload })
  return { payload, headers: { 'content-type': 'application/json', ...signed } }
}

describe.each(DIALECTS)('POST /webhook (%s)', (dialect) => {
  const clock = manualClock(Math.floor(Date.now() / 1000) * 1000 + 250)
  let t: TestApp
  let app: FastifyInstance
  let nextUser = 500

  const send = (d: Delivery, extra: { remoteAddress?: string; headers?: Record<string, string> } = {}, target: FastifyInstance = app) =>
    target.inject({ method: 'POST', url: `${BASE}/webhook`, payload: d.payload, headers: { ...d.headers, ...extra.headers }, ...(extra.remoteAddress ? { remoteAddress: extra.remoteAddress } : {}) })

  const row = async (id: number, target: FastifyInstance = app): Promise<JobRow> => (await findJob(target.db.db, id))!

  /** A job as an accepted dispatch leaves it: running, dispatched, with `dispatch_attempt`. */
  async function dispatchedJob(options: { attempt?: number; target?: FastifyInstance } = {}): Promise<{ id: number; key: string; headers: Record<string, string> }> {
    const target = options.target ?? app
    const headers = await bearer({ sub: String(nextUser++) }, { nowMs: clock.now() })
    const res = await target.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: `webhook job ${nextUser}` } })
    expect(res.statusCode).toBe(202)
    const id = res.json().job_id as number
    const at = new Date(clock.now() - 1500).toISOString().replace('T', ' ').slice(0, 23)
    await target.db.db.updateTable('ai_jobs').set({
      status: 'running', attempts: options.attempt ?? 1, dispatch_attempt: options.attempt ?? 1,
      lease_owner: 'test-worker', lease_expires_at: '2999-01-01 00:00:00.000', started_at: at, dispatched_at: at,
    }).where('id', '=', id).execute()
    return { id, key: (await row(id, target)).idempotency_key, headers }
  }

  /** The admin retry, as POST /admin/jobs/:id/retry runs it. */
  const adminRetry = (id: number) => retryJob(app, id)
  /** The store's 10-minute replay guard forgets a delivery (its time passes, or Redis restarts). */
  const forget = (d: Delivery) => app.store.del(`webhook:seen:${d.headers['webhook-id'] ? `id:${d.headers['webhook-id']}` : `sha256:${createHash('sha256').update(d.payload).digest('hex')}`}`)

  const success = (id: number, key: string, extra: Record<string, unknown> = {}) => ({
    job_id: id, idempotency_key: key, status: 'succeeded', result_json: { output: 'done', finish_reason: 'stop' }, usage: { tokens: 42, ms: 812 }, attempt: 1, ...extra,
  })

  beforeAll(async () => {
    t = await buildTestApp({ dialect, name: `gw_t5_webhook_${dialect}_${RUN}`, clock, env: { AI_WEBHOOK_SECRET: SECRETS, RATE_LIMIT_MAX: '0', RESULT_MAX_BYTES: '2048' } })
    app = t.app
  })
  afterAll(async () => {
    await t?.close()
  })

  it('stores a success: result, usage mapping, webhook_ts, a new ETag, and publishes the change', async () => {
    const { id, key, headers } = await dispatchedJob()
    const before = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
    const etagBefore = before.headers.etag
    const seen: number[] = []
    const off = app.jobEvents.onChanged((jobId) => seen.push(jobId))
    clock.advance(1000)
    const res = await send(delivery(success(id, key), { nowMs: clock.now() }))
    expect(res.statusCode).toBe(204)
    expect(res.body).toBe('')

    const stored = await row(id)
    expect(stored.status).toBe('succeeded')
    expect(JSON.parse(stored.result_json!)).toEqual({ output: 'done', finish_reason: 'stop' })
    expect(stored.error_text).toBeNull()
    expect(Number(stored.output_tokens)).toBe(42)
    expect(Number(stored.provider_ms)).toBe(812)
    expect(fromDbTime(stored.webhook_ts!)).toBe(clock.now())
    // From the dispatch (1.5 s before the job was set up) to this webhook.
    expect(Number(stored.worker_ms)).toBe(2500)
    expect(stored.lease_owner).toBeNull()
    expect(stored.lease_expires_at).toBeNull()

    const after = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
    expect(after.headers.etag).not.toBe(etagBefore)
    expect(after.json()).toMatchObject({ status: 'succeeded', result: { output: 'done' }, error: null, usage: { output_tokens: 42, provider_ms: 812, worker_ms: 2500 } })
    const cached = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: { ...headers, 'if-none-match': String(etagBefore) } })
    expect(cached.statusCode).toBe(200)
    await new Promise((r) => setTimeout(r, 20))
    off()
    expect(seen).toContain(id)
  })

  it('stores a failure with its error_text', async () => {
    const { id, key } = await dispatchedJob()
    const res = await send(delivery({ job_id: id, idempotency_key: key, status: 'failed', error_text: 'provider said no', attempt: 1 }, { nowMs: clock.now() }))
    expect(res.statusCode).toBe(204)
    const stored = await row(id)
    expect(stored).toMatchObject({ status: 'failed', error_text: 'provider said no', result_json: null })
    expect(stored.webhook_ts).not.toBeNull()
  })

  it.each([
    ['standard', WHSEC],
    ['standard', PLAIN],
    ['seed', WHSEC],
    ['seed', PLAIN],
  ] as const)('accepts the %s scheme signed with any AI_WEBHOOK_SECRET entry (%#)', async (scheme, secret) => {
    const { id, key } = await dispatchedJob()
    const res = await send(delivery(success(id, key), { scheme, secret, nowMs: clock.now() }))
    expect(res.statusCode).toBe(204)
    expect((await row(id)).status).toBe('succeeded')
  })

  it('accepts a pending job\'s webhook without attempt (nothing numbered it yet)', async () => {
    const headers = await bearer({ sub: String(nextUser++) }, { nowMs: clock.now() })
    const id = (await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'pending one' } })).json().job_id as number
    const key = (await row(id)).idempotency_key
    const body = success(id, key)
    delete (body as Record<string, unknown>).attempt
    expect((await send(delivery(body, { nowMs: clock.now() }))).statusCode).toBe(204)
    expect((await row(id)).status).toBe('succeeded')
  })

  describe('refused with 403, and the job is unchanged', () => {
    const refusals: [string, (id: number, key: string) => Delivery][] = [
      ['a forged signature (standard)', (id, key) => {
        const d = delivery(success(id, key), { nowMs: clock.now() })
        return { ...d, headers: { ...d.headers, 'webhook-signature': `v1,${randomBytes(32).toString('base64')}` } }
      }],
      ['a forged signature (seed)', (id, key) => {
        const d = delivery(success(id, key), { scheme: 'seed', nowMs: clock.now() })
        return { ...d, headers: { ...d.headers, 'x-ai-signature': randomBytes(32).toString('base64') } }
      }],
      ['a body changed after signing (standard)', (id, key) => {
        const d = delivery(success(id, key), { nowMs: clock.now() })
        return { ...d, payload: d.payload.replace('"done"', '"DONE"') }
      }],
      ['a body changed after signing (seed)', (id, key) => {
        const d = delivery(success(id, key), { scheme: 'seed', nowMs: clock.now() })
        return { ...d, payload: d.payload.replace('"done"', '"DONE"') }
      }],
      ['a timestamp 121 s old (standard)', (id, key) => delivery(success(id, key), { nowMs: clock.now() - 121_000 })],
      ['a timestamp 121 s old (seed)', (id, key) => delivery(success(id, key), { scheme: 'seed', nowMs: clock.now() - 121_000 })],
      ['a timestamp 121 s ahead', (id, key) => delivery(success(id, key), { nowMs: clock.now() + 121_000 })],
      ['an unknown secret (standard)', (id, key) => delivery(success(id, key), { secret: `whsec_${randomBytes(24).toString('base64')}`, nowMs: clock.now() })],
      ['an unknown secret (seed)', (id, key) => delivery(success(id, key), { scheme: 'seed', secret: 'not-configured', nowMs: clock.now() })],
      ['no signature at all', (id, key) => ({ payload: JSON.stringify(success(id, key)), headers: { 'content-type': 'application/json' } })],
      ['a seed signature without its timestamp', (id, key) => {
        const d = delivery(success(id, key), { scheme: 'seed', nowMs: clock.now() })
        const { 'x-ai-timestamp': _, ...rest } = d.headers
        return { ...d, headers: rest }
      }],
    ]
    it.each(refusals)('%s', async (_name, make) => {
      const { id, key } = await dispatchedJob()
      const before = await row(id)
      const res = await send(make(id, key))
      expect(res.statusCode).toBe(403)
      expect(res.json()).toMatchObject({ code: 'ai_invalid_signature', data: { status: 403 } })
      expect(await row(id)).toEqual(before)
    })

    it('accepts exactly 120 s of drift either way', async () => {
      const a = await dispatchedJob()
      expect((await send(delivery(success(a.id, a.key), { nowMs: clock.now() - 120_000 }))).statusCode).toBe(204)
      const b = await dispatchedJob()
      expect((await send(delivery(success(b.id, b.key), { scheme: 'seed', nowMs: clock.now() + 120_000 }))).statusCode).toBe(204)
    })

    it('checks the signature before anything else: a bad one on an unknown job or a malformed body is 403', async () => {
      const forged = (payload: string): Delivery => ({ payload, headers: { 'content-type': 'application/json', 'x-ai-signature': randomBytes(32).toString('base64'), 'x-ai-timestamp': String(Math.floor(clock.now() / 1000)) } })
      expect((await send(forged(JSON.stringify(success(999_999, 'x'.repeat(64)))))).statusCode).toBe(403)
      expect((await send(forged('{not json'))).statusCode).toBe(403)
    })
  })

  describe('answers in SPEC order after the signature', () => {
    it.each([
      ['not JSON', () => '{"job_id": 1,'],
      ['an array', () => '[]'],
      ['no job_id', () => JSON.stringify({ idempotency_key: 'k', status: 'succeeded', result_json: 1 })],
      ['a string job_id', () => JSON.stringify({ job_id: '1', idempotency_key: 'k', status: 'succeeded', result_json: 1 })],
      ['an unknown status', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'done', result_json: 1 })],
      ['succeeded without result_json', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'succeeded' })],
      ['failed without error_text', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'failed' })],
      ['failed with a result_json', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'failed', error_text: 'x', result_json: 1 })],
      ['succeeded with an error_text', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'succeeded', error_text: 'x', result_json: 1 })],
      ['attempt 0', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'succeeded', result_json: 1, attempt: 0 })],
      ['usage.tokens not a count', () => JSON.stringify({ job_id: 1, idempotency_key: 'k', status: 'succeeded', result_json: 1, usage: { tokens: -1 } })],
    ])('400 for a malformed body: %s', async (_name, body) => {
      const res = await send(delivery(body(), { nowMs: clock.now() }))
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
    })

    it('a malformed body for a real job leaves it unchanged (400 before the job is looked at)', async () => {
      const { id, key } = await dispatchedJob()
      const before = await row(id)
      const res = await send(delivery({ job_id: id, idempotency_key: key, status: 'succeeded' }, { nowMs: clock.now() }))
      expect(res.statusCode).toBe(400)
      expect(await row(id)).toEqual(before)
    })

    // Fields a row cannot hold are refused with 400, so the worker learns the delivery can never be
    // stored, and the job stays exactly as it was: nothing half-written, no 500 while it stays running.
    it.each([
      ['usage.tokens above INT UNSIGNED', (id: number, key: string) => success(id, key, { usage: { tokens: 4_294_967_296, ms: 1 } }), 'usage.tokens'],
      ['usage.ms above INT UNSIGNED', (id: number, key: string) => success(id, key, { usage: { tokens: 1, ms: 1e15 } }), 'usage.ms'],
      ['an error_text longer than the TEXT column', (id: number, key: string) => ({ job_id: id, idempotency_key: key, status: 'failed', attempt: 1, error_text: 'é'.repeat(32_800) }), 'error_text'],
      ['a result_json nested 5,000 levels deep', (id: number, key: string) => `{"job_id":${id},"idempotency_key":"${key}","status":"succeeded","attempt":1,"result_json":${'['.repeat(5000)}${']'.repeat(5000)}}`, 'body'],
      ['attempt above INT UNSIGNED', (id: number, key: string) => success(id, key, { attempt: 2 ** 40 }), 'attempt'],
    ])('400 naming the field for %s, and the job is unchanged', async (_name, body, field) => {
      const { id, key } = await dispatchedJob()
      const before = await row(id)
      const res = await send(delivery(body(id, key), { nowMs: clock.now() }))
      expect(res.statusCode, res.body).toBe(400)
      expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400, field } })
      expect(await row(id)).toEqual(before)
      // The worker's retries of the same delivery are refused the same way; a good one still lands.
      expect((await send(delivery(body(id, key), { nowMs: clock.now() }))).statusCode).toBe(400)
      expect((await send(delivery(success(id, key), { nowMs: clock.now() }))).statusCode).toBe(204)
      expect((await row(id)).status).toBe('succeeded')
    })

    it('404 for an unknown job', async () => {
      const res = await send(delivery(success(987_654_321, 'a'.repeat(64)), { nowMs: clock.now() }))
      expect(res.statusCode).toBe(404)
      expect(res.json()).toMatchObject({ data: { status: 404 } })
    })

    it('400 for a key that is not the job\'s, and the job is unchanged', async () => {
      const { id } = await dispatchedJob()
      const before = await row(id)
      const res = await send(delivery(success(id, 'b'.repeat(64)), { nowMs: clock.now() }))
      expect(res.statusCode).toBe(400)
      expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
      expect(await row(id)).toEqual(before)
    })
  })

  describe('duplicates, terminal jobs and older attempts: 204 and nothing changes', () => {
    it.each(['standard', 'seed'] as const)('a replayed delivery (%s) is 204, even after the row was reset to running', async (scheme) => {
      const { id, key } = await dispatchedJob()
      const d = delivery(success(id, key), { scheme, nowMs: clock.now() })
      expect((await send(d)).statusCode).toBe(204)
      expect((await row(id)).status).toBe('succeeded')

      // Reset the row by hand, as an admin might: only the replay guard can stop the replay now.
      await app.db.db.updateTable('ai_jobs')
        .set({ status: 'running', result_json: null, output_tokens: null, provider_ms: null, webhook_ts: null })
        .where('id', '=', id).execute()
      const reset = await row(id)
      clock.advance(5_000)
      const replay = await send(d)
      expect(replay.statusCode).toBe(204)
      expect(await row(id)).toEqual(reset)
    })

    it.each(['standard', 'seed'] as const)('a delivery (%s) that completed a job never completes it again, even after an admin retry and after the replay guard forgot it', async (scheme) => {
      const { id, key } = await dispatchedJob()
      const d = delivery(success(id, key, { result_json: { output: 'the first result' } }), { scheme, nowMs: clock.now() })
      expect((await send(d)).statusCode).toBe(204)
      expect((await row(id)).status).toBe('succeeded')

      // An admin retry, then the store forgets the delivery (its 10 minutes pass, or Redis restarts).
      await adminRetry(id)
      const retried = await row(id)
      expect(retried.status).toBe('pending')
      await forget(d)
      clock.advance(11 * 60_000)
      // The seed scheme signs no timestamp: its old signature is still good with a fresh X-AI-Timestamp.
      const replayed = scheme === 'seed'
        ? { payload: d.payload, headers: { ...d.headers, 'x-ai-timestamp': String(Math.floor(clock.now() / 1000)) } }
        : delivery(d.payload, { nowMs: clock.now(), id: d.headers['webhook-id'] })
      expect((await send(replayed)).statusCode).toBe(204)
      expect(await row(id)).toEqual(retried)
    })

    it('keeps counting dispatch_attempt across an admin retry, so the old delivery\'s attempt never matches the new dispatch', async () => {
      const { id, key } = await dispatchedJob({ attempt: 1 })
      expect((await send(delivery(success(id, key), { scheme: 'seed', nowMs: clock.now() }))).statusCode).toBe(204)
      await adminRetry(id)
      expect(Number((await row(id)).dispatch_attempt)).toBe(1)
      // The next dispatch claims the job as external mode does, and numbers it 2.
      const claimed = await claimJobs(app.db, { limit: 50, nowMs: clock.now(), leaseOwner: 'test-worker', leaseMs: 60_000, dispatch: true })
      expect(claimed.find((r) => r.id === id)?.dispatch_attempt).toBe(2)
      // The same worker result, numbered by the dispatch it answers, lands; the old numbering does not.
      expect((await send(delivery(success(id, key, { attempt: 1 }), { nowMs: clock.now() }))).statusCode).toBe(204)
      expect((await row(id)).status).toBe('running')
      expect((await send(delivery(success(id, key, { attempt: 2 }), { nowMs: clock.now() }))).statusCode).toBe(204)
      expect((await row(id)).status).toBe('succeeded')
    })

    it('a new delivery for a terminal job changes nothing', async () => {
      const { id, key } = await dispatchedJob()
      expect((await send(delivery(success(id, key), { nowMs: clock.now() }))).statusCode).toBe(204)
      const done = await row(id)
      const res = await send(delivery({ job_id: id, idempotency_key: key, status: 'failed', error_text: 'late failure', attempt: 1 }, { nowMs: clock.now() }))
      expect(res.statusCode).toBe(204)
      expect(await row(id)).toEqual(done)
    })

    it('a canceled job stays canceled', async () => {
      const { id, key, headers } = await dispatchedJob()
      expect((await app.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers })).statusCode).toBe(200)
      const canceled = await row(id)
      expect((await send(delivery(success(id, key), { nowMs: clock.now() }))).statusCode).toBe(204)
      expect(await row(id)).toEqual(canceled)
    })

    it('an older attempt is acknowledged and ignored; the current one is stored', async () => {
      const { id, key } = await dispatchedJob({ attempt: 2 })
      const before = await row(id)
      const old = await send(delivery(success(id, key, { attempt: 1, result_json: { output: 'stale' } }), { nowMs: clock.now() }))
      expect(old.statusCode).toBe(204)
      expect(await row(id)).toEqual(before)
      const current = await send(delivery(success(id, key, { attempt: 2 }), { nowMs: clock.now() }))
      expect(current.statusCode).toBe(204)
      expect(await row(id)).toMatchObject({ status: 'succeeded', result_json: JSON.stringify({ output: 'done', finish_reason: 'stop' }) })
    })
  })

  describe('raw body handling', () => {
    it('verifies the exact bytes whatever the content type', async () => {
      for (const contentType of ['application/json; charset=utf-8', 'text/plain', 'application/octet-stream']) {
        const { id, key } = await dispatchedJob()
        const d = delivery(success(id, key), { nowMs: clock.now() })
        expect((await send({ ...d, headers: { ...d.headers, 'content-type': contentType } })).statusCode).toBe(204)
      }
      {
        const { id, key } = await dispatchedJob()
        const d = delivery(success(id, key), { nowMs: clock.now() })
        const { 'content-type': _, ...noType } = d.headers
        expect((await send({ ...d, headers: noType })).statusCode).toBe(204)
        expect((await row(id)).status).toBe('succeeded')
      }
      // Whitespace and key order are the sender's: the signature covers them as sent.
      const { id, key } = await dispatchedJob()
      const odd = `{ "status" : "succeeded",\n "job_id": ${id}, "idempotency_key": "${key}", "result_json": {"b":1,"a":2} }`
      expect((await send(delivery(odd, { nowMs: clock.now() }))).statusCode).toBe(204)
      expect(JSON.parse((await row(id)).result_json!)).toEqual({ b: 1, a: 2 })
    })

    it('refuses a body over the limit with 413, and fails a result over RESULT_MAX_BYTES with error_text', async () => {
      const { id, key } = await dispatchedJob()
      const huge = delivery(success(id, key, { result_json: { output: 'x'.repeat(2048 + 70_000) } }), { nowMs: clock.now() })
      expect((await send(huge)).statusCode).toBe(413)
      expect((await row(id)).status).toBe('running')

      const big = await send(delivery(success(id, key, { result_json: { output: 'y'.repeat(3000) } }), { nowMs: clock.now() }))
      expect(big.statusCode).toBe(204)
      const stored = await row(id)
      expect(stored.status).toBe('failed')
      expect(stored.result_json).toBeNull()
      expect(stored.error_text).toMatch(/RESULT_MAX_BYTES/)
    })
  })
})

describe.each(DIALECTS)('POST /webhook behind a proxy with WEBHOOK_ALLOWED_IPS (%s)', (dialect) => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({
      dialect,
      name: `gw_t5_webhook_ip_${dialect}_${RUN}`,
      env: { AI_WEBHOOK_SECRET: SECRETS, WEBHOOK_ALLOWED_IPS: '10.1.2.0/24,2001:db8::/32', TRUST_PROXY: '127.0.0.1' },
    })
  })
  afterAll(async () => {
    await t?.close()
  })

  // An unknown job: an allowed delivery gets past the allowlist and the signature to the 404.
  const probe = () => delivery(
    { job_id: 123_456_789, idempotency_key: 'a'.repeat(64), status: 'failed', error_text: 'x' },
    { nowMs: Date.now() },
  )
  const send = (remoteAddress: string, forwardedFor?: string) => {
    const d = probe()
    return t.app.inject({
      method: 'POST', url: `${BASE}/webhook`, payload: d.payload, remoteAddress,
      headers: { ...d.headers, ...(forwardedFor ? { 'x-forwarded-for': forwardedFor } : {}) },
    })
  }

  it('lets an allowed client through the trusted proxy (X-Forwarded-For resolved by TRUST_PROXY)', async () => {
    expect((await send('127.0.0.1', '10.1.2.3')).statusCode).toBe(404)
    expect((await send('127.0.0.1', '203.0.113.9, 10.1.2.44')).statusCode).toBe(404)
    expect((await send('10.1.2.7')).statusCode).toBe(404)
    expect((await send('2001:db8::5')).statusCode).toBe(404)
  })

  it('refuses any other address with 403, before the signature', async () => {
    const refused = await send('127.0.0.1', '10.9.9.9')
    expect(refused.statusCode).toBe(403)
    expect(refused.json()).toMatchObject({ code: 'ai_forbidden', data: { status: 403 } })
    // The proxy itself is not on the list.
    expect((await send('127.0.0.1')).statusCode).toBe(403)
    // X-Forwarded-For from an untrusted peer is not believed.
    expect((await send('192.0.2.1', '10.1.2.3')).statusCode).toBe(403)
    // A valid signature does not help.
    expect((await send('198.51.100.4')).statusCode).toBe(403)
  })
})

describe('the replay guard in Redis is shared by replicas', () => {
  const clock = manualClock(Math.floor(Date.now() / 1000) * 1000)
  let t: TestApp
  let replica: FastifyInstance
  beforeAll(async () => {
    // Its own table prefix, so its Redis keys are its own.
    const env = { AI_WEBHOOK_SECRET: SECRETS, REDIS_URL, WP_TABLE_PREFIX: `t5wh${randomBytes(3).toString('hex')}_` }
    t = await buildTestApp({ dialect: 'mysql', name: `gw_t5_webhook_redis_${RUN}`, clock, env })
    replica = await buildApp(testConfig({ ...env, DATABASE_URL: t.config.databaseUrl }), { logger: false, startWorkers: false, migrate: false, clock })
  })
  afterAll(async () => {
    await replica?.close()
    await t?.close()
  })

  it('a delivery replayed to another replica is 204 and changes nothing', async () => {
    expect(t.app.store.kind).not.toBe('memory')
    const headers = await bearer({ sub: '77' }, { nowMs: clock.now() })
    const id = (await t.app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'two replicas' } })).json().job_id as number
    const key = (await findJob(t.app.db.db, id))!.idempotency_key
    await t.app.db.db.updateTable('ai_jobs').set({ status: 'running', dispatch_attempt: 1 }).where('id', '=', id).execute()
    const d = delivery({ job_id: id, idempotency_key: key, status: 'succeeded', result_json: 'ok', attempt: 1 }, { nowMs: clock.now() })
    const first = await t.app.inject({ method: 'POST', url: `${BASE}/webhook`, payload: d.payload, headers: d.headers })
    expect(first.statusCode).toBe(204)
    await t.app.db.db.updateTable('ai_jobs').set({ status: 'running', result_json: null }).where('id', '=', id).execute()
    const again = await replica.inject({ method: 'POST', url: `${BASE}/webhook`, payload: d.payload, headers: d.headers })
    expect(again.statusCode).toBe(204)
    expect((await findJob(t.app.db.db, id))!).toMatchObject({ status: 'running', result_json: null })
  })
})
