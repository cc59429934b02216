/**
 * Property-based fuzzing of every public route through `app.inject()`, on SQLite and (a smaller
 * run) on MariaDB, with WordPress's tables loaded so cookies, nonces and application passwords
 * are real, a few seeded jobs and valid credentials beside the forged ones. For every response:
 * - no 5xx (the database is never cut here);
 * - every 4xx is the WordPress REST shape, with `data.status` equal to the HTTP status (OpenAI's
 *   `{ error: { message, type } }` on the OpenAI-compatible routes);
 *   a 204 or 304 has no body;
 * - `X-Request-Id` matches `^[A-Za-z0-9._:-]{1,128}$` (and echoes a valid one the client sent),
 *   `X-Content-Type-Options: nosniff` is there;
 * - a refused request changed no row: `{prefix}ai_jobs` (count, `version` sum, highest id) and the
 *   webhook receipts are compared before and after each request; an accepted one changed exactly
 *   what it says (a 202 adds its pending row, a cancel or retry bumps one version, a webhook at
 *   most one), and every accepted create is still there at the end, with no half-written row.
 *
 * The seed is fixed and printed; `FUZZ_SEED=<n>` runs another one (or replays a failure), and
 * `FUZZ_SCALE=<factor>` multiplies the number of runs.
 */
import fc from 'fast-check'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rewritePlainPermalink } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase } from '../../src/db/database.js'
import { findJob } from '../../src/db/jobs-repository.js'
import { toDbTime } from '../../src/db/time.js'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { buildTestApp, signToken, TOKEN_SECRET, type Dialect, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { authVectors as v, loadWordPressFixturesMysql, loadWordPressFixturesSqlite } from '../support/wordpress-fixtures.js'
import { routeArbitrary, ROUTES, type FuzzRequest, type FuzzWorld, type Login, type Route } from './arbitraries.js'

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_128)
const SCALE = Number(process.env.FUZZ_SCALE ?? 1)
if (!Number.isSafeInteger(SEED) || !(SCALE > 0)) throw new Error('FUZZ_SEED must be an integer and FUZZ_SCALE a positive number')
console.info(`route fuzzing with seed ${SEED} (FUZZ_SEED=<n> to change it, FUZZ_SCALE=<factor> for more runs)`)

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
/** A request the gateway routes to its OpenAI-compatible routes (a plain permalink once rewritten). */
const OPENAI_ROUTE = /^\/wp-json\/ai\/v1\/openai(?:[/?]|$)/
/** A request that gets no answer in this long is a hang, reported as a failure (never a timing assertion). */
const ANSWER_WITHIN_MS = 15_000

const NOW_MS = v.cases[0]!.now * 1000
const SALT_ENV = Object.fromEntries(Object.entries(v.salts).map(([name, value]) => [`WP_${name}`, value]))
const WHSEC = `whsec_${Buffer.from('fuzz webhook secret, 32 bytes ok').toString('base64')}`
const PLAIN_SECRET = 'plain fuzz webhook secret'

function login(user: string): Login {
  const c = v.cases.find((k) => k.user === user && k.expect_user_id > 0 && k.nonce)
  if (!c) throw new Error(`no valid cookie for ${user} in auth-vectors.json`)
  return { cookie: c.cookie, nonce: c.nonce! }
}

/** Runs per route on SQLite; MariaDB gets a quarter (its SQL differs, its statements are slower). */
const RUNS: Record<Route, number> = {
  'GET /jobs/:id/events': 150,
  'POST /jobs': 500,
  'GET /jobs': 250,
  'GET /jobs/:id': 250,
  'POST /jobs/:id/cancel': 200,
  'POST /webhook': 400,
  'GET /.well-known/jwks.json': 100,
  'GET /openapi.json': 60,
  'GET /admin/jobs': 250,
  'POST /admin/jobs/:id/retry': 200,
  'POST /admin/jobs/:id/cancel': 200,
  'GET /admin/usage.csv': 150,
  'any route, any method': 300,
}

interface Snapshot {
  jobs: number
  versions: number
  maxId: number
  receipts: number
}

function shortly(value: string, max = 300): string {
  return value.length > max ? `${value.slice(0, max)}… (${value.length} chars)` : value
}

function describeRequest(req: FuzzRequest): string {
  const payload = req.payload === undefined ? '(none)'
    : Buffer.isBuffer(req.payload) ? `<Buffer ${shortly(req.payload.toString('hex'), 200)}>` : JSON.stringify(shortly(req.payload))
  const headers = Object.fromEntries(Object.entries(req.headers).map(([k, val]) => [k, shortly(val, 120)]))
  return `${req.method} ${shortly(req.url)}\nheaders: ${JSON.stringify(headers)}\npayload: ${payload}${req.remoteAddress ? `\nfrom: ${req.remoteAddress}` : ''}`
}

describe.each<{ dialect: Dialect; share: number }>([
  { dialect: 'sqlite', share: 1 },
  { dialect: 'mysql', share: 0.25 },
])('fuzzing every public route on $dialect', ({ dialect, share }) => {
  const clock = manualClock(NOW_MS)
  let t: TestApp
  let app: FastifyInstance
  let world: FuzzWorld
  const created: number[] = []
  let seeded = 0
  let requests = 0
  const statuses = new Map<number, number>()
  /** Answers below 400 per route: the generated requests got past authentication and validation. */
  const reached = new Map<string, number>()
  let currentRoute = ''

  const snapshot = async (): Promise<Snapshot> => {
    const jobs = await app.db.db.selectFrom('ai_jobs')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('version').as('v'), eb.fn.max<number>('id').as('m')])
      .executeTakeFirstOrThrow()
    const receipts = await app.db.db.selectFrom('ai_webhook_receipts').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
    return { jobs: Number(jobs.n), versions: Number(jobs.v ?? 0), maxId: Number(jobs.m ?? 0), receipts: Number(receipts.n) }
  }

  function checkAnswer(req: FuzzRequest, res: LightMyRequestResponse): string[] {
    const problems: string[] = []
    const status = res.statusCode
    if (status >= 500) problems.push(`answered ${status}`)
    const rid = res.headers['x-request-id']
    if (typeof rid !== 'string' || !REQUEST_ID.test(rid)) problems.push(`X-Request-Id is ${JSON.stringify(rid)}`)
    const sent = req.headers['x-request-id']
    if (sent !== undefined && REQUEST_ID.test(sent) && rid !== sent) problems.push(`the valid X-Request-Id ${sent} came back as ${String(rid)}`)
    if (res.headers['x-content-type-options'] !== 'nosniff') problems.push('no X-Content-Type-Options: nosniff')
    if ((status === 204 || status === 304) && res.body !== '') problems.push(`a ${status} with a body`)
    if (status >= 400 && req.method !== 'HEAD') {
      let body: { code?: unknown; message?: unknown; data?: { status?: unknown } } | undefined
      try {
        body = JSON.parse(res.body) as typeof body
      } catch {
        problems.push('a 4xx whose body is not JSON')
      }
      // The OpenAI-compatible routes answer in OpenAI's error shape, which OpenAI SDKs parse (SPEC §11).
      const openAi = OPENAI_ROUTE.test(rewritePlainPermalink(req.url, ''))
      const error = (body as { error?: { message?: unknown; type?: unknown } } | undefined)?.error
      if (openAi) {
        if (body && (typeof error?.message !== 'string' || typeof error.type !== 'string')) problems.push('a 4xx on /openai/ not in the OpenAI shape { error: { message, type, code, param } }')
      } else if (body && (typeof body.code !== 'string' || typeof body.message !== 'string' || body.data?.status !== status)) {
        problems.push('a 4xx not in the WordPress REST shape { code, message, data: { status } }')
      }
    }
    const type = String(res.headers['content-type'] ?? '')
    if (status >= 200 && status < 300 && type.startsWith('application/json') && req.method !== 'HEAD') {
      try {
        JSON.parse(res.body)
      } catch {
        problems.push('a 2xx JSON answer that does not parse')
      }
    }
    return problems
  }

  /** What the answer allows to have changed: nothing unless it accepted a change. */
  async function checkRows(req: FuzzRequest, res: LightMyRequestResponse, before: Snapshot, after: Snapshot): Promise<string[]> {
    const problems: string[] = []
    const same = (what: keyof Snapshot) => {
      if (after[what] !== before[what]) problems.push(`${what} went from ${before[what]} to ${after[what]}`)
    }
    const status = res.statusCode
    if (req.method === 'POST' && status === 202) {
      const body = res.json() as { job_id: number; status: string; request_id: string }
      const row = await findJob(app.db.db, body.job_id)
      if (!row) return [`202 for job ${body.job_id}, which is not in the table`]
      created.push(body.job_id)
      if (after.jobs !== before.jobs + 1) problems.push(`a 202 changed the job count by ${after.jobs - before.jobs}`)
      if (after.maxId !== body.job_id) problems.push(`a 202 for job ${body.job_id} but the highest id is ${after.maxId}`)
      if (after.versions !== before.versions + Number(row.version)) problems.push('a 202 changed other rows\' versions')
      if (row.status !== 'pending' || row.run_after === null || row.lease_owner !== null || Number(row.attempts) !== 0) problems.push(`a 202 left its row ${row.status}, attempts ${row.attempts}`)
      if (row.request_id !== body.request_id || body.request_id !== res.headers['x-request-id']) problems.push('the new row does not carry the request id')
      same('receipts')
    } else if (req.method === 'POST' && status === 200 && res.headers['idempotent-replayed'] !== 'true') {
      // A cancel (own or admin) or an admin retry: one job, one version.
      const body = res.json() as { job_id: number; status: string }
      const row = await findJob(app.db.db, body.job_id)
      if (!row || row.status !== body.status || !['canceled', 'pending'].includes(row.status)) problems.push(`a 200 showing job ${body.job_id} ${body.status}, stored as ${row?.status}`)
      if (after.versions !== before.versions + 1) problems.push(`a cancel or retry moved the version sum by ${after.versions - before.versions}`)
      same('jobs')
      same('receipts')
    } else if (req.method === 'POST' && status === 204) {
      // A webhook: acknowledged and ignored, or one job completed (and its receipt kept).
      const dv = after.versions - before.versions
      const dr = after.receipts - before.receipts
      if (dv < 0 || dv > 1 || dr < 0 || dr > 1) problems.push(`a webhook moved the version sum by ${dv} and the receipts by ${dr}`)
      same('jobs')
    } else {
      same('jobs')
      same('versions')
      same('maxId')
      same('receipts')
    }
    return problems
  }

  async function send(req: FuzzRequest): Promise<void> {
    const before = await snapshot()
    let timer: NodeJS.Timeout | undefined
    const res = await Promise.race([
      app.inject({ method: req.method as 'GET', url: req.url, headers: req.headers, ...(req.payload !== undefined ? { payload: req.payload } : {}), ...(req.remoteAddress ? { remoteAddress: req.remoteAddress } : {}) }),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ANSWER_WITHIN_MS} ms\n${describeRequest(req)}`)), ANSWER_WITHIN_MS)
      }),
    ]).finally(() => clearTimeout(timer))
    const after = await snapshot()
    requests++
    statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1)
    if (res.statusCode < 400) reached.set(currentRoute, (reached.get(currentRoute) ?? 0) + 1)
    const problems = [...checkAnswer(req, res), ...await checkRows(req, res, before, after)]
    if (problems.length > 0) {
      throw new Error(`${problems.join('; ')}\n${describeRequest(req)}\n→ ${res.statusCode} ${shortly(res.body, 600)}`)
    }
  }

  /** A job row put straight into the state a test needs (the API only creates pending ones). */
  async function seedJob(authorization: Record<string, string>, input: string, state: Record<string, unknown>): Promise<number> {
    const res = await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: { 'content-type': 'application/json', ...authorization }, payload: JSON.stringify({ input }) })
    expect(res.statusCode, res.body).toBe(202)
    const id = res.json().job_id as number
    if (Object.keys(state).length > 0) await app.db.db.updateTable('ai_jobs').set({ ...state, version: 2 }).where('id', '=', id).execute()
    seeded++
    return id
  }

  async function fuzz(route: Route): Promise<void> {
    currentRoute = route
    const numRuns = Math.max(5, Math.round(RUNS[route] * share * SCALE))
    const arbitrary = routeArbitrary(world, route)
    await fc.assert(fc.asyncProperty(arbitrary, send), { seed: SEED, numRuns, endOnFailure: process.env.FUZZ_SHRINK !== '1' })
  }

  beforeAll(async () => {
    const name = `gw_test_auth_fuzz_${dialect}_${RUN}`
    t = await buildTestApp({
      dialect, name, clock,
      env: {
        ...SALT_ENV,
        AI_WEBHOOK_SECRET: `${WHSEC},${PLAIN_SECRET}`,
        AI_MODELS: JSON.stringify({ 'echo-small': { provider: 'echo', max_tokens: 256 } }),
        RATE_LIMIT_MAX: '100',
      },
      // WordPress's tables before the app starts: its logins are then on, as beside a real site.
      prepare: async (url) => {
        if (dialect === 'mysql') {
          await loadWordPressFixturesMysql(name)
          return
        }
        const handle = await openDatabase({ url, prefix: v.table_prefix })
        try {
          await loadWordPressFixturesSqlite(handle)
        } finally {
          await handle.close()
        }
      },
    })
    app = t.app
    expect(app.auth.wordpress, 'WordPress logins are on').toBeDefined()
    const alicePassword = v.application_passwords.find((p) => p.user === 'alice')!
    world = {
      nowMs: NOW_MS,
      tokenSecret: TOKEN_SECRET,
      // A token of a WordPress user (bob, an author: tokens are held to AI_CREATE_CAPABILITY like his cookie).
      userToken: `Bearer ${await signToken({ sub: String(v.users.bob!.id) }, { nowMs: NOW_MS })}`,
      visitorToken: `Bearer ${await signToken({ sub: '0', sid: 'fuzz-visitor-0123456789' }, { nowMs: NOW_MS })}`,
      cookieName: v.logged_in_cookie_name,
      admin: login('admin'),
      alice: login('alice'),
      basic: `Basic ${Buffer.from(`alice:${alicePassword.password}`).toString('base64')}`,
      streamIds: [],
      mutableIds: [],
      keys: {},
      webhookSecrets: [WHSEC, PLAIN_SECRET],
      models: ['echo', 'echo-small'],
    }
    // The jobs that exist while streams are fuzzed are all terminal: a stream of a job that is
    // not would stay open by design.
    const user = { authorization: world.userToken }
    const visitor = { authorization: world.visitorToken }
    const admin = { cookie: `${world.cookieName}=${encodeURIComponent(world.admin.cookie)}`, 'x-wp-nonce': world.admin.nonce }
    const done = { status: 'succeeded', result_json: JSON.stringify({ output: 'done' }), input_tokens: 3, output_tokens: 5, attempts: 1 }
    world.streamIds.push(
      await seedJob(user, 'stream succeeded', done),
      await seedJob(visitor, 'stream failed', { status: 'failed', error_text: 'provider said no', attempts: 3 }),
      await seedJob(admin, 'stream canceled', { status: 'canceled' }),
      await seedJob(user, 'stream succeeded with a result that is not JSON', { ...done, result_json: 'plain text' }),
    )
  }, 60_000)

  afterAll(async () => {
    console.info(`${dialect}: ${requests} generated requests, answers ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`)
    await t?.close()
  })

  // First, while every job is terminal (see beforeAll).
  it('GET /jobs/:id/events', () => fuzz('GET /jobs/:id/events'), 60_000)

  it('seeds jobs in every state for the routes that change them', async () => {
    const user = { authorization: world.userToken }
    const visitor = { authorization: world.visitorToken }
    const alice = { cookie: `${world.cookieName}=${encodeURIComponent(world.alice.cookie)}`, 'x-wp-nonce': world.alice.nonce }
    const admin = { cookie: `${world.cookieName}=${encodeURIComponent(world.admin.cookie)}`, 'x-wp-nonce': world.admin.nonce }
    // Dispatched a moment ago, as an external worker's webhook normally finds its job.
    const dispatchedAt = toDbTime(NOW_MS - 1_500)
    const running = { status: 'running', attempts: 1, dispatch_attempt: 1, lease_owner: 'fuzz-worker', lease_expires_at: '2999-01-01 00:00:00.000', started_at: dispatchedAt, dispatched_at: dispatchedAt }
    world.mutableIds.push(
      await seedJob(user, 'pending for the token user', {}),
      await seedJob(visitor, 'pending for the visitor', {}),
      await seedJob(alice, 'pending for alice', {}),
      await seedJob(admin, 'pending for the admin', {}),
      await seedJob(user, 'dispatched for the token user', running),
      await seedJob(admin, 'dispatched for the admin', running),
      await seedJob(user, 'succeeded for the token user', { status: 'succeeded', result_json: '{"output":"ok"}', attempts: 1 }),
      await seedJob(alice, 'failed for alice', { status: 'failed', error_text: 'no', attempts: 3 }),
    )
    for (const id of world.mutableIds) world.keys[id] = (await findJob(app.db.db, id))!.idempotency_key
    expect((await snapshot()).jobs).toBe(seeded)
  })

  for (const route of ROUTES.filter((r) => r !== 'GET /jobs/:id/events')) {
    it(route, () => fuzz(route), 90_000)
  }

  // Found by this fuzzing on MariaDB: `worker_ms` = now − the dispatch's start must fit the INT
  // UNSIGNED column, or a delivery more than 2^32 ms (49.7 days) late is refused by strict mode
  // with a 500 on every retry of the worker and the job never completes.
  it('completes a job whose webhook comes 60 days after its dispatch (worker_ms stays within INT UNSIGNED)', async () => {
    const longAgo = toDbTime(NOW_MS - 60 * 86_400_000)
    const id = await seedJob({ authorization: world.userToken }, 'dispatched 60 days ago', {
      status: 'running', attempts: 1, dispatch_attempt: 1, lease_owner: 'fuzz-worker', lease_expires_at: '2999-01-01 00:00:00.000', started_at: longAgo, dispatched_at: longAgo,
    })
    const payload = JSON.stringify({ job_id: id, idempotency_key: (await findJob(app.db.db, id))!.idempotency_key, status: 'succeeded', result_json: { output: 'late' } })
    const headers = { 'content-type': 'application/json', ...signStandardWebhook({ secret: WHSEC, id: 'msg_late_delivery', timestampSeconds: Math.floor(NOW_MS / 1000), body: payload }) }
    await send({ method: 'POST', url: '/wp-json/ai/v1/webhook', headers, payload })
    expect((await findJob(app.db.db, id))!.status).toBe('succeeded')
  })

  it('keeps every accepted create, and leaves no row half-written', async () => {
    // The generators reach what they are for: accepted creates, completed webhooks, admin answers.
    expect(created.length, 'accepted creates').toBeGreaterThan(0)
    expect(statuses.get(204) ?? 0, 'webhooks that were stored or acknowledged').toBeGreaterThan(0)
    const admin = ROUTES.filter((r) => r.includes('/admin/')).reduce((n, r) => n + (reached.get(r) ?? 0), 0)
    expect(admin, 'admin answers below 400').toBeGreaterThan(0)
    const rows = await app.db.db.selectFrom('ai_jobs').selectAll().orderBy('id').execute()
    expect(rows).toHaveLength(seeded + created.length)
    const ids = new Set(rows.map((r) => Number(r.id)))
    for (const id of created) expect(ids.has(id), `created job ${id}`).toBe(true)
    const keys = new Set(rows.map((r) => r.idempotency_key))
    expect(keys.size).toBe(rows.length)
    for (const r of rows) {
      const where = `job ${r.id} (${r.status})`
      expect(r.input_hash, where).toMatch(/^[0-9a-f]{64}$/)
      expect(r.idempotency_key, where).toMatch(/^[0-9a-f]{64}$/)
      expect(() => JSON.parse(r.request_json), where).not.toThrow()
      if (r.status === 'pending') expect({ run_after: r.run_after !== null, lease: r.lease_owner }, where).toEqual({ run_after: true, lease: null })
      if (r.status === 'running') expect(r.lease_owner !== null && r.lease_expires_at !== null, where).toBe(true)
      if (r.status === 'succeeded') expect(r.result_json, where).not.toBeNull()
      if (r.status === 'failed') expect(r.error_text, where).toBeTruthy()
      if (r.status !== 'running') expect(r.lease_owner, where).toBeNull()
    }
  })
})
