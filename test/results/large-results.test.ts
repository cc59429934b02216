/**
 * Results over RESULT_INLINE_MAX_BYTES (SPEC §12): stored outside the table before the row names
 * them, shown as `result: null` + a signed `result_url`, fetched by that link alone, refused when
 * the link is changed or expired, and never left behind when no row names them.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { claimJobs, findJob, findResultRefs, type JobRow } from '../../src/db/jobs-repository.js'
import { DecisionWriter } from '../../src/jobs/apply-decision.js'
import { retryJob } from '../../src/jobs/retry-job.js'
import { createLogger } from '../../src/logger.js'
import { loadResult } from '../../src/results/large-results.js'
import { resultLinkExp } from '../../src/results/result-link.js'
import { deleteStoredResults, DirectoryResultStore } from '../../src/results/result-store.js'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { bearer, DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/blog/wp-json/ai/v1'
const PUBLIC_URL = 'https://example.test/blog'
const WHSEC = `whsec_${randomBytes(24).toString('base64')}`
const HOUR = 3_600_000
const INLINE_MAX = 65_536
const RESULT_MAX = 400_000

/** Words, so the echo provider streams it as it would any text: `n` characters in all. */
function text(n: number): string {
  return 'lorem ipsum dolor sit amet '.repeat(Math.ceil(n / 27)).slice(0, n)
}

describe.each(DIALECTS)('large results (%s)', (dialect) => {
  // Ten minutes into an hour, so the test knows when the link's hour rolls over.
  const clock = manualClock(Math.floor(Date.now() / HOUR) * HOUR + 10 * 60_000)
  const dir = mkdtempSync(join(tmpdir(), `gw_results_store_${dialect}_`))
  const files = new DirectoryResultStore(dir)
  const lines: Record<string, unknown>[] = []
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  let nextUser = 700

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_results_${dialect}_${RUN}`)
    cleanup = db.cleanup
    const sink = new Writable({ write(chunk, _enc, done) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); done() } })
    app = await buildApp(testConfig({
      DATABASE_URL: db.url, WP_TABLE_PREFIX: `wpres${RUN}_`, PUBLIC_URL,
      RATE_LIMIT_MAX: '0', DEDUPE_WINDOW_SECONDS: '0', AI_WEBHOOK_SECRET: WHSEC,
      REQUEST_MAX_BYTES: String(1024 * 1024), RESULT_MAX_BYTES: String(RESULT_MAX), RESULT_INLINE_MAX_BYTES: String(INLINE_MAX),
      RESULT_STORE_DIR: dir,
    }), { logger: createLogger('info', sink), startWorkers: false, clock })
  })
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
    rmSync(dir, { recursive: true, force: true })
  })

  const owner = async (sub = String(nextUser++)) => bearer({ sub }, { nowMs: clock.now() })
  const row = async (id: number): Promise<JobRow> => (await findJob(app.db.db, id))!
  /** The stored files of job `id`, by their keys' job part. */
  const filesOf = (id: number): string[] => readdirSync(dir, { recursive: true, withFileTypes: false })
    .map(String).filter((p) => new RegExp(`(^|/)${id}-\\d+-[0-9a-f]{32}\\.json$`).test(p))
  /** The path and query of a result_url, for inject. */
  const pathOf = (url: string) => url.slice(new URL(PUBLIC_URL).origin.length)

  async function finishedEcho(input: string): Promise<{ id: number; headers: Record<string, string>; sub: string }> {
    const sub = String(nextUser++)
    const headers = await owner(sub)
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input } })
    expect(res.statusCode).toBe(202)
    const id = res.json().job_id as number
    while ((await app.pool.runOnce()) > 0) { /* run it */ }
    return { id, headers, sub }
  }

  it('keeps a result under the limit inline, as before', async () => {
    const { id, headers } = await finishedEcho('a small answer')
    const stored = await row(id)
    expect(stored.result_ref).toBeNull()
    expect(stored.result_json).not.toBeNull()
    const res = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
    expect(res.json().result.output).toBe('a small answer')
    expect(res.json()).not.toHaveProperty('result_url')
    expect(res.headers.etag).toBe(`"${id}.${stored.version}"`)
    expect(filesOf(id)).toEqual([])
  })

  it('stores a large result outside the table and serves it by its signed link alone', async () => {
    const input = text(100_000)
    const { id, headers } = await finishedEcho(input)
    const stored = await row(id)
    expect(stored.status).toBe('succeeded')
    expect(stored.result_json).toBeNull()
    expect(stored.result_ref).toMatch(new RegExp(`^[0-9a-f]{2}/${id}-\\d+-[0-9a-f]{32}\\.json$`))
    const file = await files.statKey(stored.result_ref!)
    expect(file?.mode).toBe(0o600)
    expect(file!.size).toBeGreaterThan(INLINE_MAX)

    const job = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
    expect(job.statusCode).toBe(200)
    const body = job.json()
    expect(body.result).toBeNull()
    const exp = resultLinkExp(clock.now())
    // Ten minutes into the hour: the link runs to the end of the next hour.
    expect(exp * 1000 - clock.now()).toBe(HOUR + 50 * 60_000)
    expect(body.result_url).toMatch(new RegExp(`^${PUBLIC_URL}/wp-json/ai/v1/jobs/${id}/result\\?exp=${exp}&sig=[A-Za-z0-9_-]{43}$`))
    expect(job.headers.etag).toBe(`"${id}.${stored.version}.${exp}"`)

    // No credentials at all: the signature is the authorization.
    const fetched = await app.inject({ method: 'GET', url: pathOf(body.result_url) })
    expect(fetched.statusCode).toBe(200)
    expect(fetched.headers['content-type']).toBe('application/json; charset=utf-8')
    expect(fetched.headers['content-length']).toBe(String(file!.size))
    expect(fetched.headers['cache-control']).toBe(`private, max-age=${exp - clock.now() / 1000}`)
    expect(fetched.headers['x-content-type-options']).toBe('nosniff')
    expect(fetched.rawPayload.equals((await files.get(stored.result_ref!))!)).toBe(true)
    expect(fetched.json().output).toBe(input)
    // What events carry inline: the same result, read from the store.
    expect(await loadResult(app.results.store, stored)).toEqual(fetched.json())

    // The list shows the same link.
    const list = await app.inject({ method: 'GET', url: `${BASE}/jobs`, headers })
    expect(list.json().jobs[0]).toMatchObject({ job_id: id, result: null, result_url: body.result_url })
  })

  it('refuses a changed signature, another job id, and an expired link', async () => {
    const { id, headers } = await finishedEcho(text(80_000))
    const other = await finishedEcho(text(70_000))
    const url = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json().result_url as string
    const good = pathOf(url)
    expect((await app.inject({ method: 'GET', url: good })).statusCode).toBe(200)

    const sig = new URL(url).searchParams.get('sig')!
    const flipped = `${sig.slice(0, 10)}${sig[10] === 'A' ? 'B' : 'A'}${sig.slice(11)}`
    const changedSig = await app.inject({ method: 'GET', url: good.replace(sig, flipped) })
    expect(changedSig.statusCode).toBe(403)
    expect(changedSig.json()).toMatchObject({ code: 'ai_invalid_signature', data: { status: 403 } })

    // This job's signature on another job that has a stored result too.
    const otherId = await app.inject({ method: 'GET', url: good.replace(`/jobs/${id}/`, `/jobs/${other.id}/`) })
    expect(otherId.statusCode).toBe(403)
    // … and on an id with no job.
    expect((await app.inject({ method: 'GET', url: good.replace(`/jobs/${id}/`, '/jobs/987654321/') })).statusCode).toBe(403)
    // A later exp with the same signature.
    const exp = Number(new URL(url).searchParams.get('exp'))
    expect((await app.inject({ method: 'GET', url: good.replace(`exp=${exp}`, `exp=${exp + 3600}`) })).statusCode).toBe(403)
    // Malformed parameters are a 400 naming the field.
    const malformed = await app.inject({ method: 'GET', url: good.replace(`sig=${sig}`, 'sig=short') })
    expect(malformed.statusCode).toBe(400)
    expect(malformed.json().code).toBe('ai_invalid_request')

    const before = clock.now()
    clock.set(exp * 1000)
    try {
      const expired = await app.inject({ method: 'GET', url: good })
      expect(expired.statusCode).toBe(403)
      expect(expired.json().message).toMatch(/expired/)
    } finally {
      clock.set(before)
    }
  })

  it('a 304 never keeps an expired link: the ETag changes when the hour rolls over', async () => {
    const { id, headers, sub } = await finishedEcho(text(90_000))
    const first = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
    const etag = first.headers.etag as string
    const again = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: { ...headers, 'if-none-match': etag } })
    expect(again.statusCode).toBe(304)
    expect(again.headers.etag).toBe(etag)

    const before = clock.now()
    clock.advance(HOUR)
    try {
      // The same owner, with a token fresh at the new time.
      const later = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: { ...(await owner(sub)), 'if-none-match': etag } })
      expect(later.statusCode).toBe(200)
      expect(later.headers.etag).not.toBe(etag)
      const url = later.json().result_url as string
      expect(url).not.toBe(first.json().result_url)
      expect(Number(new URL(url).searchParams.get('exp'))).toBe(resultLinkExp(clock.now()))
      // The old link still works until its own exp, the new one too.
      expect((await app.inject({ method: 'GET', url: pathOf(first.json().result_url) })).statusCode).toBe(200)
      expect((await app.inject({ method: 'GET', url: pathOf(url) })).statusCode).toBe(200)
    } finally {
      clock.set(before)
    }
  })

  it('the SSE status event carries the same job JSON, result_url included', async () => {
    const { id, headers } = await finishedEcho(text(75_000))
    const job = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json()
    // A finished job: one status event, then the stream ends.
    const res = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}/events`, headers })
    const data = res.body.split('\n').find((l) => l.startsWith('data: '))
    expect(JSON.parse(data!.slice(6))).toEqual(job)
    expect(job.result_url).toMatch(/\/result\?exp=\d+&sig=/)
  })

  it('keeps a large result inline when the store refuses it, rather than losing it', async () => {
    const put = app.results.store.put
    app.results.store.put = async () => { throw new Error('volume full') }
    try {
      const input = text(70_000)
      const { id, headers } = await finishedEcho(input)
      const stored = await row(id)
      expect(stored.result_ref).toBeNull()
      expect(JSON.parse(stored.result_json!).output).toBe(input)
      const job = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json()
      expect(job.result.output).toBe(input)
      expect(job).not.toHaveProperty('result_url')
      expect(filesOf(id)).toEqual([])
    } finally {
      app.results.store.put = put
    }
  })

  it('still fails a result above RESULT_MAX_BYTES, and stores nothing for it', async () => {
    const { id, headers } = await finishedEcho(text(RESULT_MAX + 10_000))
    const stored = await row(id)
    expect(stored.status).toBe('failed')
    expect(stored.error_text).toMatch(/over RESULT_MAX_BYTES \(400000\)/)
    expect(stored.result_ref).toBeNull()
    expect(stored.result_json).toBeNull()
    expect(filesOf(id)).toEqual([])
    const job = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json()
    expect(job).not.toHaveProperty('result_url')
  })

  it('stores a webhook result above the inline limit too', async () => {
    const headers = await owner()
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'for an external worker' } })
    const id = res.json().job_id as number
    const job = await row(id)
    const result = { output: text(120_000), pages: Array.from({ length: 50 }, (_, i) => ({ page: i, note: 'é😀' })) }
    const payload = JSON.stringify({ job_id: id, idempotency_key: job.idempotency_key, status: 'succeeded', result_json: result, usage: { tokens: 10, ms: 5 } })
    const signed = signStandardWebhook({ secret: WHSEC, id: `msg_${randomUUID()}`, timestampSeconds: Math.floor(clock.now() / 1000), body: payload })
    const hook = await app.inject({ method: 'POST', url: `${BASE}/webhook`, payload, headers: { 'content-type': 'application/json', ...signed } })
    expect(hook.statusCode).toBe(204)

    const stored = await row(id)
    expect(stored.status).toBe('succeeded')
    expect(stored.result_json).toBeNull()
    expect(stored.result_ref).not.toBeNull()
    expect((await files.statKey(stored.result_ref!))?.mode).toBe(0o600)
    const body = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json()
    expect(body.result).toBeNull()
    const fetched = await app.inject({ method: 'GET', url: pathOf(body.result_url) })
    expect(fetched.statusCode).toBe(200)
    expect(fetched.body).toBe(JSON.stringify(result))

    // A second delivery (another webhook-id) for the finished job changes nothing and leaves no file.
    const again = signStandardWebhook({ secret: WHSEC, id: `msg_${randomUUID()}`, timestampSeconds: Math.floor(clock.now() / 1000), body: payload })
    expect((await app.inject({ method: 'POST', url: `${BASE}/webhook`, payload, headers: { 'content-type': 'application/json', ...again } })).statusCode).toBe(204)
    expect(filesOf(id)).toEqual([stored.result_ref])
  })

  it('leaves no file for a webhook of an older dispatch, which changes nothing', async () => {
    const headers = await owner()
    const id = (await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'dispatched twice' } })).json().job_id as number
    await app.db.db.updateTable('ai_jobs').set({ status: 'running', attempts: 2, dispatch_attempt: 2, lease_owner: 'external', lease_expires_at: '2999-01-01 00:00:00.000' }).where('id', '=', id).execute()
    const job = await row(id)
    const payload = JSON.stringify({ job_id: id, idempotency_key: job.idempotency_key, status: 'succeeded', result_json: { output: text(90_000) }, attempt: 1 })
    const signed = signStandardWebhook({ secret: WHSEC, id: `msg_${randomUUID()}`, timestampSeconds: Math.floor(clock.now() / 1000), body: payload })
    expect((await app.inject({ method: 'POST', url: `${BASE}/webhook`, payload, headers: { 'content-type': 'application/json', ...signed } })).statusCode).toBe(204)
    const after = await row(id)
    expect(after.status).toBe('running')
    expect(after.result_ref).toBeNull()
    expect(filesOf(id)).toEqual([])
  })

  it('deletes the file when the fenced write loses (the job was canceled meanwhile)', async () => {
    const headers = await owner()
    const id = (await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'canceled mid-call' } })).json().job_id as number
    const [claimed] = await claimJobs(app.db, { limit: 1, nowMs: clock.now(), leaseOwner: 'test-lost-lease', leaseMs: 60_000 })
    expect(claimed?.id).toBe(id)
    expect((await app.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers })).statusCode).toBe(200)

    const writer = new DecisionWriter({ db: app.db, clock, log: app.log, leaseOwner: 'test-lost-lease', maxAttempts: 3, results: app.results })
    await writer.apply(claimed!, {
      kind: 'finish',
      outcome: { status: 'succeeded', resultJson: JSON.stringify({ output: text(100_000) }), errorText: null, providerMs: 1, workerMs: 1, inputTokens: null, outputTokens: null },
    })
    await writer.drain()
    const after = await row(id)
    expect(after.status).toBe('canceled')
    expect(after.result_ref).toBeNull()
    expect(filesOf(id)).toEqual([])
  })

  it('an admin retry removes the stored result, and the new run stores its own', async () => {
    const { id, headers } = await finishedEcho(text(100_000))
    const first = (await row(id)).result_ref!
    expect(await files.statKey(first)).toBeDefined()
    const oldUrl = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json().result_url as string

    const retried = await retryJob(app, id)
    expect(retried.status).toBe('pending')
    expect(retried.result_ref).toBeNull()
    expect(await files.statKey(first)).toBeUndefined()
    // The old link names the old version: refused.
    expect((await app.inject({ method: 'GET', url: pathOf(oldUrl) })).statusCode).toBe(403)

    while ((await app.pool.runOnce()) > 0) { /* run it again */ }
    const second = (await row(id)).result_ref!
    expect(second).not.toBe(first)
    expect(filesOf(id)).toEqual([second])
  })

  it('names the stored results of a user or of rows, for archive and erase to delete', async () => {
    const small = await finishedEcho('inline only')
    const big = await finishedEcho(text(70_000))
    const ref = (await row(big.id)).result_ref!
    expect(await findResultRefs(app.db.db, { userId: Number(big.sub) })).toEqual([ref])
    expect(await findResultRefs(app.db.db, { userId: Number(small.sub) })).toEqual([])
    expect(await findResultRefs(app.db.db, { ids: [small.id, big.id] })).toEqual([ref])
    expect(await findResultRefs(app.db.db, { ids: [] })).toEqual([])
    await app.db.db.deleteFrom('ai_jobs').where('id', '=', big.id).execute()
    await deleteStoredResults(app.results.store, [ref])
    expect(filesOf(big.id)).toEqual([])
  })

  it('redacts sig in the log line of a result fetch', async () => {
    const { id, headers } = await finishedEcho(text(70_000))
    const url = (await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })).json().result_url as string
    const sig = new URL(url).searchParams.get('sig')!
    const from = lines.length
    expect((await app.inject({ method: 'GET', url: pathOf(url) })).statusCode).toBe(200)
    const logged = lines.slice(from)
    const fetchLine = logged.find((l) => (l.req as { url?: string } | undefined)?.url?.includes(`/jobs/${id}/result`))
    expect((fetchLine!.req as { url: string }).url).toMatch(/[?&]sig=\[redacted\]/)
    expect((fetchLine!.req as { url: string }).url).toMatch(/[?&]exp=\d+/)
    expect(JSON.stringify(lines)).not.toContain(sig)
  })
})
