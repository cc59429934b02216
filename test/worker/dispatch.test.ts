import { createHash, generateKeyPairSync } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { findJob, reapExpiredLeases, type JobRow } from '../../src/db/jobs-repository.js'
import { fromDbTime } from '../../src/db/time.js'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { jobBackoffMs } from '../../src/worker/backoff.js'
import { bearer, buildTestApp, DIALECTS, waitFor, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

/**
 * External mode (SPEC §5 "Dispatch to external workers"): the pool POSTs claimed jobs to a fake
 * worker, a real HTTP server on loopback that records what it got and answers as told.
 */

const PREFIX = '/blog/wp-json/ai/v1'
const PUBLIC_URL = 'https://example.test/blog'
const CALLBACK_URL = 'https://example.test/blog/wp-json/ai/v1/webhook'
const WEBHOOK_SECRET = `whsec_${Buffer.from('dispatch test webhook secret').toString('base64')}`
const KID = 'dispatch-test-key-1'
const RESULT_SECONDS = 30
const MAX_ATTEMPTS = 3

const ecPem = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const rsaPem = () => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()

interface Received {
  method: string
  url: string
  headers: IncomingHttpHeaders
  raw: Buffer
}

type Answer = 'accept' | 'hang' | { status: number; headers?: Record<string, string> }
type Answerer = Answer | ((received: Received) => Promise<Answer>)

/** A fake external worker. `answer` decides each reply; `hang` keeps the request open. */
class FakeWorker {
  received: Received[] = []
  answer: Answerer = 'accept'
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  private readonly hanging = new Set<ServerResponse>()
  port = 0

  async listen(port = 0): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', async () => {
        const received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, raw: Buffer.concat(chunks) }
        this.received.push(received)
        const answer = typeof this.answer === 'function' ? await this.answer(received) : this.answer
        if (answer === 'hang') {
          this.hanging.add(res)
          res.on('close', () => this.hanging.delete(res))
          return
        }
        if (answer === 'accept') {
          res.writeHead(202, { 'content-type': 'application/json' })
          res.end('{"accepted":true}')
          return
        }
        res.writeHead(answer.status, answer.headers)
        res.end()
      })
    })
    server.on('connection', (s: Socket) => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => resolve())
    })
    this.server = server
    this.port = (server.address() as AddressInfo).port
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/dispatch`
  }

  /** Stops listening and drops every connection: the port is closed. */
  async close(): Promise<void> {
    const server = this.server
    this.server = undefined
    if (!server) return
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  last(): Received {
    const r = this.received[this.received.length - 1]
    if (!r) throw new Error('the fake worker received nothing')
    return r
  }
}

function externalEnv(workerUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    AI_WORKER_URL: workerUrl,
    PUBLIC_URL,
    AI_WEBHOOK_SECRET: WEBHOOK_SECRET,
    AI_JWT_PRIVATE_KEY: ecPem(),
    AI_JWT_KID: KID,
    AI_QUEUE_TIMEOUT: '0.5',
    AI_WORKER_RESULT_SECONDS: String(RESULT_SECONDS),
    JOB_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
    RATE_LIMIT_MAX: '0',
    ...extra,
  }
}

async function jwksOf(app: FastifyInstance): Promise<JSONWebKeySet> {
  const res = await app.inject({ method: 'GET', url: `${PREFIX}/.well-known/jwks.json` })
  expect(res.statusCode).toBe(200)
  return res.json() as JSONWebKeySet
}

describe.each(DIALECTS)('external mode dispatch (%s)', (dialect) => {
  const clock = manualClock(Math.floor(Date.now() / 1000) * 1000 + 321)
  const worker = new FakeWorker()
  let t: TestApp
  let app: FastifyInstance
  let nextUser = 700

  const row = async (id: number): Promise<JobRow> => (await findJob(app.db.db, id))!
  const create = async (input: string, extraHeaders: Record<string, string> = {}): Promise<{ id: number; userId: number; requestId: string; headers: Record<string, string> }> => {
    const userId = nextUser++
    const headers = await bearer({ sub: String(userId) }, { nowMs: clock.now() })
    const res = await app.inject({ method: 'POST', url: `${PREFIX}/jobs`, headers: { ...headers, ...extraHeaders }, payload: { input } })
    expect(res.statusCode).toBe(202)
    return { id: res.json().job_id as number, userId, requestId: res.json().request_id as string, headers }
  }
  /** Runs claim rounds until nothing is due (earlier tests' leftovers included). */
  const runAll = async () => {
    while ((await app.pool.runOnce()) > 0) { /* next batch */ }
  }
  const reap = () => reapExpiredLeases(app.db.db, clock.now(), { maxAttempts: MAX_ATTEMPTS, backoffMs: (a) => jobBackoffMs(a, clock.random()) })
  const webhook = (body: Record<string, unknown>) => {
    const payload = JSON.stringify(body)
    const headers = signStandardWebhook({ secret: WEBHOOK_SECRET, id: `msg_${Math.random()}`, timestampSeconds: Math.floor(clock.now() / 1000), body: payload })
    return app.inject({ method: 'POST', url: `${PREFIX}/webhook`, payload, headers: { ...headers, 'content-type': 'application/json' } })
  }

  beforeAll(async () => {
    await worker.listen()
    t = await buildTestApp({ dialect, name: `gw_t5_dispatch_${dialect}_${RUN}`, clock, env: externalEnv(worker.url) })
    app = t.app
  })
  afterAll(async () => {
    await t?.close()
    await worker.close()
  })
  beforeEach(async () => {
    worker.answer = 'accept'
    // Each test sees only its own jobs: whatever an earlier one left open is closed here.
    await app.db.db.updateTable('ai_jobs').set({ status: 'canceled', lease_owner: null, lease_expires_at: null })
      .where('status', 'in', ['pending', 'running']).execute()
    clock.advance(60_000)
    worker.received = []
  })

  it('POSTs the job with a JWT whose claims are exactly SPEC §5, verifiable against the JWKS route', async () => {
    const { id, userId, requestId } = await create('dispatch me', { host: 'evil.example', 'x-forwarded-host': 'evil.example' })
    // Creating never dispatches by itself: the pool does, in the background.
    expect(worker.received).toHaveLength(0)
    expect(await app.pool.runOnce()).toBe(1)
    expect(worker.received).toHaveLength(1)
    const got = worker.last()
    const stored = await row(id)

    expect(got.method).toBe('POST')
    expect(got.url).toBe('/dispatch')
    expect(got.headers['content-type']).toBe('application/json')
    const body = JSON.parse(got.raw.toString('utf8'))
    expect(Object.keys(body).sort()).toEqual(['attempt', 'callback_url', 'idempotency_key', 'job_id', 'request', 'request_id'])
    expect(body).toEqual({
      job_id: id,
      idempotency_key: stored.idempotency_key,
      attempt: 1,
      request: expect.objectContaining({ model: 'echo', input: 'dispatch me' }),
      // From PUBLIC_URL (with its path), never from the Host header.
      callback_url: CALLBACK_URL,
      request_id: requestId,
    })
    expect(stored.idempotency_key).toMatch(/^[0-9a-f]{64}$/)

    const auth = got.headers.authorization ?? ''
    expect(auth).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/)
    const token = auth.slice('Bearer '.length)
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', kid: KID, typ: 'JWT' })
    const jwks = await jwksOf(app)
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { audience: worker.url, currentDate: new Date(clock.now()), algorithms: ['ES256'] })
    expect(Object.keys(payload).sort()).toEqual(['aud', 'body_sha256', 'exp', 'iat', 'jti', 'sub'])
    expect(payload).toEqual({
      iat: Math.floor(clock.now() / 1000),
      exp: Math.floor(clock.now() / 1000) + 60,
      sub: String(userId),
      jti: stored.idempotency_key,
      aud: worker.url,
      body_sha256: createHash('sha256').update(got.raw).digest('hex'),
    })
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(60)

    // A 2xx: running, with a lease of AI_WORKER_RESULT_SECONDS from the dispatch.
    expect(stored.status).toBe('running')
    expect(Number(stored.attempts)).toBe(1)
    expect(Number(stored.dispatch_attempt)).toBe(1)
    expect(fromDbTime(stored.dispatched_at!)).toBe(clock.now())
    expect(fromDbTime(stored.lease_expires_at!)).toBe(clock.now() + RESULT_SECONDS * 1000)
    // Nothing runs it again while the worker has it.
    expect(await app.pool.runOnce()).toBe(0)
  })

  it('with the worker down: the job stays pending without spending attempts, and is dispatched when it returns', async () => {
    const port = worker.port
    await worker.close()
    const { id } = await create('worker is down')
    for (let i = 0; i < MAX_ATTEMPTS + 2; i++) {
      expect(await app.pool.runOnce()).toBe(1)
      const stored = await row(id)
      expect(stored.status).toBe('pending')
      expect(Number(stored.attempts)).toBe(0)
      // Backed off: not due again at once.
      expect(fromDbTime(stored.run_after)).toBeGreaterThan(clock.now())
      expect(await app.pool.runOnce()).toBe(0)
      clock.advance(60_000)
    }
    // The worker comes back on the same port.
    await worker.listen(port)
    expect(await app.pool.runOnce()).toBe(1)
    const stored = await row(id)
    expect(stored.status).toBe('running')
    expect(Number(stored.attempts)).toBe(1)
    // Failed dispatches spent nothing: this is still the first attempt.
    expect(JSON.parse(worker.last().raw.toString()).attempt).toBe(1)
    expect(Number(stored.dispatch_attempt)).toBe(1)
  })

  it.each<[string, number, boolean]>([
    ['a 500', 500, false],
    ['a 401', 401, false],
    ['a 307 redirect, which is not followed', 307, true],
    ['a 302 redirect, which is not followed', 302, true],
  ])('%s is a failed dispatch: back to pending, no attempt spent', async (_name, status, redirect) => {
    const target = new FakeWorker()
    await target.listen()
    try {
      worker.answer = { status, headers: redirect ? { location: target.url } : {} }
      const { id } = await create(`refused ${status}`)
      expect(await app.pool.runOnce()).toBe(1)
      expect(worker.received).toHaveLength(1)
      expect(target.received).toHaveLength(0)
      const stored = await row(id)
      expect(stored.status).toBe('pending')
      expect(Number(stored.attempts)).toBe(0)
      expect(stored.dispatched_at).toBeNull()
    } finally {
      await target.close()
    }
  })

  it('an expired lease dispatches again with attempt + 1; an older attempt\'s webhook is then ignored', async () => {
    const { id } = await create('slow worker')
    expect(await app.pool.runOnce()).toBe(1)
    const first = JSON.parse(worker.last().raw.toString())
    expect(first.attempt).toBe(1)

    // Nothing comes back within AI_WORKER_RESULT_SECONDS.
    clock.advance(RESULT_SECONDS * 1000 - 1)
    expect(await reap()).toMatchObject({ requeued: 0, failed: 0, ids: [] })
    clock.advance(2)
    expect(await reap()).toMatchObject({ requeued: 1, failed: 0 })
    let stored = await row(id)
    expect(stored.status).toBe('pending')
    expect(Number(stored.attempts)).toBe(1)

    clock.advance(60_000)
    expect(await app.pool.runOnce()).toBe(1)
    const second = JSON.parse(worker.last().raw.toString())
    expect(second.attempt).toBe(2)
    expect(second.idempotency_key).toBe(first.idempotency_key)
    stored = await row(id)
    expect(stored.status).toBe('running')
    expect(Number(stored.attempts)).toBe(2)
    expect(Number(stored.dispatch_attempt)).toBe(2)

    const late = await webhook({ job_id: id, idempotency_key: first.idempotency_key, status: 'succeeded', result_json: { output: 'late' }, attempt: 1 })
    expect(late.statusCode).toBe(204)
    expect((await row(id)).status).toBe('running')
    const current = await webhook({ job_id: id, idempotency_key: first.idempotency_key, status: 'succeeded', result_json: { output: 'on time' }, attempt: 2, usage: { tokens: 3, ms: 40 } })
    expect(current.statusCode).toBe(204)
    stored = await row(id)
    expect(stored.status).toBe('succeeded')
    expect(JSON.parse(stored.result_json!)).toEqual({ output: 'on time' })
  })

  it(`fails the job with error_text after JOB_MAX_ATTEMPTS (${MAX_ATTEMPTS}) expired dispatches`, async () => {
    const { id, headers } = await create('never answered')
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      clock.advance(10 * 60_000)
      expect(await app.pool.runOnce()).toBe(1)
      expect(JSON.parse(worker.last().raw.toString()).attempt).toBe(attempt)
      clock.advance(RESULT_SECONDS * 1000 + 1)
      expect(await reap()).toMatchObject(attempt < MAX_ATTEMPTS ? { requeued: 1, failed: 0 } : { requeued: 0, failed: 1 })
    }
    const stored = await row(id)
    expect(stored.status).toBe('failed')
    expect(Number(stored.attempts)).toBe(MAX_ATTEMPTS)
    expect(stored.error_text).toEqual(expect.any(String))
    expect(stored.error_text!.length).toBeGreaterThan(0)
    const job = (await app.inject({ method: 'GET', url: `${PREFIX}/jobs/${id}`, headers })).json()
    expect(job).toMatchObject({ status: 'failed', attempts: MAX_ATTEMPTS, error: stored.error_text })
    // A failed job is never dispatched again.
    const sent = worker.received.length
    clock.advance(10 * 60_000)
    await runAll()
    expect(worker.received).toHaveLength(sent)
  })

  it('a webhook that arrives before the worker\'s 2xx completes the job; the late 2xx changes nothing', async () => {
    const { id } = await create('instant worker')
    let webhookStatus = 0
    worker.answer = async (received) => {
      const body = JSON.parse(received.raw.toString())
      webhookStatus = (await webhook({ job_id: body.job_id, idempotency_key: body.idempotency_key, status: 'succeeded', result_json: { output: 'fast' }, attempt: body.attempt })).statusCode
      return 'accept'
    }
    expect(await app.pool.runOnce()).toBe(1)
    expect(webhookStatus).toBe(204)
    const stored = await row(id)
    expect(stored.status).toBe('succeeded')
    expect(JSON.parse(stored.result_json!)).toEqual({ output: 'fast' })
    expect(stored.lease_expires_at).toBeNull()
    expect(Number(stored.worker_ms)).toBeGreaterThanOrEqual(0)
    expect(await app.pool.runOnce()).toBe(0)
  })

  it('a job canceled before its dispatch is never sent', async () => {
    const { id, headers } = await create('cancel me first')
    expect((await app.inject({ method: 'POST', url: `${PREFIX}/jobs/${id}/cancel`, headers })).statusCode).toBe(200)
    await runAll()
    expect(worker.received).toHaveLength(0)
    expect((await row(id)).status).toBe('canceled')
  })
})

describe('external mode dispatch with an RSA key', () => {
  const worker = new FakeWorker()
  let t: TestApp
  beforeAll(async () => {
    await worker.listen()
    t = await buildTestApp({ dialect: 'sqlite', name: `gw_t5_dispatch_rsa_${RUN}`, env: externalEnv(worker.url, { AI_JWT_PRIVATE_KEY: rsaPem(), AI_JWT_KID: 'rsa-1' }) })
  })
  afterAll(async () => {
    await t?.close()
    await worker.close()
  })

  it('signs RS256 and publishes the RSA key', async () => {
    const headers = await bearer({ sub: '9' })
    expect((await t.app.inject({ method: 'POST', url: `${PREFIX}/jobs`, headers, payload: { input: 'rsa' } })).statusCode).toBe(202)
    expect(await t.app.pool.runOnce()).toBe(1)
    const token = (worker.last().headers.authorization ?? '').slice('Bearer '.length)
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'RS256', kid: 'rsa-1', typ: 'JWT' })
    const jwks = await jwksOf(t.app)
    expect(jwks.keys).toEqual([expect.objectContaining({ kty: 'RSA', alg: 'RS256', kid: 'rsa-1', use: 'sig' })])
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), { audience: worker.url, algorithms: ['RS256'] })
    expect(payload.body_sha256).toBe(createHash('sha256').update(worker.last().raw).digest('hex'))
  })
})

describe('a worker that never answers does not hold up job creation', () => {
  const QUEUE_TIMEOUT_S = 1
  const worker = new FakeWorker()
  let t: TestApp
  beforeAll(async () => {
    await worker.listen()
    worker.answer = 'hang'
    t = await buildTestApp({
      dialect: 'mysql',
      name: `gw_t5_dispatch_hang_${RUN}`,
      env: externalEnv(worker.url, { AI_QUEUE_TIMEOUT: String(QUEUE_TIMEOUT_S) }),
      deps: { startWorkers: true, poolOptions: { pollMs: 100, reapEveryMs: 3_600_000 } },
    })
  })
  afterAll(async () => {
    await t?.close()
    await worker.close()
  })

  it('answers 202 well within AI_QUEUE_TIMEOUT, and the hung dispatch is given up after it', async () => {
    const headers = await bearer({ sub: '11' })
    const ids: number[] = []
    for (let i = 0; i < 3; i++) {
      const started = performance.now()
      const res = await t.app.inject({ method: 'POST', url: `${PREFIX}/jobs`, headers, payload: { input: `hang ${i}` } })
      const elapsed = performance.now() - started
      expect(res.statusCode).toBe(202)
      expect(elapsed).toBeLessThan(QUEUE_TIMEOUT_S * 1000)
      ids.push(res.json().job_id as number)
      // The next create happens while this one's dispatch hangs.
      await waitFor(() => (worker.received.length > i ? true : undefined), 5_000, `dispatch ${i} to reach the worker`)
    }
    // Each hung dispatch is abandoned after AI_QUEUE_TIMEOUT and the job goes back to pending, attempts unspent.
    for (const id of ids) {
      const stored = await waitFor(async () => {
        const r = (await findJob(t.app.db.db, id))!
        return r.status === 'pending' && r.attempts === 0 && r.updated_at !== r.created_at ? r : undefined
      }, 10_000, `job ${id} back to pending`)
      expect(stored.dispatched_at).toBeNull()
    }
  })
})
