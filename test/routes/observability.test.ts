/**
 * What an operator watches (SPEC issue of the site owner's console): the metrics after a known
 * sequence of jobs, and log lines that carry request_id and job_id, the provider call's line with
 * the request id of the POST that created the job.
 */
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { createLogger } from '../../src/logger.js'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { bearer, DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const WHSEC = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'

function metric(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `))
  return line === undefined ? Number.NaN : Number(line.split(' ').pop())
}

describe.each(DIALECTS)('metrics and logs (%s)', (dialect) => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  const lines: Record<string, unknown>[] = []
  // The queue figures are cached for 5 s: the test's clock moves past that between scrapes.
  const clock = manualClock(Date.now())

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_observability_${dialect}_${RUN}`)
    cleanup = db.cleanup
    const sink = new Writable({ write(chunk, _enc, done) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); done() } })
    app = await buildApp(testConfig({
      DATABASE_URL: db.url, WP_TABLE_PREFIX: `wpobs${RUN}_`, RATE_LIMIT_MAX: '0', DEDUPE_WINDOW_SECONDS: '0', AI_WEBHOOK_SECRET: WHSEC,
      AI_BUDGETS: JSON.stringify({ users: { 66: { tokens_per_day: 30 } } }),
      AI_MODELS: JSON.stringify({ 'echo-fails': { provider: 'echo', fail_status: 400 } }),
    }), { logger: createLogger('info', sink), startWorkers: false, clock })
  })
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
  })

  const post = async (sub: string, body: Record<string, unknown>, requestId?: string) => app.inject({
    method: 'POST', url: `${BASE}/jobs`, payload: JSON.stringify(body),
    headers: { ...(await bearer({ sub })), 'content-type': 'application/json', ...(requestId ? { 'x-request-id': requestId } : {}) },
  })

  it('counts a known sequence of jobs', async () => {
    const before = (await app.inject({ method: 'GET', url: '/metrics' })).body
    expect(metric(before, 'ai_gateway_queue_depth', 'status="pending"')).toBe(0)
    // Three jobs that succeed (8 + 12 + 4 bytes of input), one the provider refuses, one canceled.
    for (const input of ['eight by', 'twelve bytes', 'four']) expect((await post('61', { input })).statusCode).toBe(202)
    expect((await post('61', { input: 'refused', model: 'echo-fails' })).statusCode).toBe(202)
    const canceled = (await post('61', { input: 'canceled' })).json().job_id as number
    expect((await app.inject({ method: 'POST', url: `${BASE}/jobs/${canceled}/cancel`, headers: await bearer({ sub: '61' }) })).statusCode).toBe(200)
    // A budget refusal: 30 tokens a day, each create reserves its input plus 20.
    expect((await post('66', { input: 'x', params: { max_tokens: 20 } })).statusCode).toBe(202)
    expect((await post('66', { input: 'y', params: { max_tokens: 20 } })).statusCode).toBe(429)
    // Webhook signatures: one good (on no job: 404), one wrong.
    const body = '{"job_id":999999,"idempotency_key":"k","status":"failed","error_text":"x"}'
    const good = signStandardWebhook({ secret: WHSEC, id: 'msg_obs_1', timestampSeconds: Math.floor(Date.now() / 1000), body })
    expect((await app.inject({ method: 'POST', url: `${BASE}/webhook`, headers: { ...good, 'content-type': 'application/json' }, payload: body })).statusCode).toBe(404)
    expect((await app.inject({ method: 'POST', url: `${BASE}/webhook`, headers: { ...signStandardWebhook({ secret: 'whsec_' + Buffer.from('another secret of 32 bytes......').toString('base64'), id: 'msg_obs_2', timestampSeconds: Math.floor(Date.now() / 1000), body }), 'content-type': 'application/json' }, payload: body })).statusCode).toBe(403)

    clock.advance(5_000)
    let text = (await app.inject({ method: 'GET', url: '/metrics' })).body
    // Five pending now (user 66's and 61's four), none running.
    expect(metric(text, 'ai_gateway_queue_depth', 'status="pending"')).toBe(5)
    expect(metric(text, 'ai_gateway_queue_depth', 'status="running"')).toBe(0)
    expect(metric(text, 'ai_gateway_queue_oldest_pending_seconds')).toBeGreaterThanOrEqual(0)
    expect(metric(text, 'ai_gateway_budget_refusals_total', 'scope="user"')).toBe(1)
    expect(metric(text, 'ai_gateway_webhook_verifications_total', 'outcome="ok"')).toBe(1)
    expect(metric(text, 'ai_gateway_webhook_verifications_total', 'outcome="signature_mismatch"')).toBe(1)

    while ((await app.pool.runOnce()) > 0) { /* run them all */ }
    // The queue figures are still the cached ones within 5 s; the counters are not cached.
    text = (await app.inject({ method: 'GET', url: '/metrics' })).body
    expect(metric(text, 'ai_gateway_queue_depth', 'status="pending"')).toBe(5)
    clock.advance(5_000)
    text = (await app.inject({ method: 'GET', url: '/metrics' })).body
    const tokens = (kind: string) => metric(text, 'ai_gateway_tokens_total', `provider="echo",model="echo",kind="${kind}"`)
    // echo: input and output are each ceil(bytes / 4): 2 + 3 + 1 for the three, 1 for user 66's one.
    expect(tokens('input')).toBe(7)
    expect(tokens('output')).toBe(7)
    expect(metric(text, 'ai_gateway_jobs_created_total')).toBe(6)
    expect(metric(text, 'ai_gateway_unmetered_calls_total')).toBe(0)
    expect(metric(text, 'ai_gateway_queue_depth', 'status="pending"')).toBe(0)
  })

  it('every line of a request carries request_id; a job\'s lines carry job_id and the request id of its POST', async () => {
    lines.length = 0
    const res = await post('62', { input: 'traced' }, 'req-trace-1')
    const id = res.json().job_id as number
    await app.pool.runOnce()
    const ofRequest = lines.filter((l) => (l.req as { url?: string } | undefined)?.url?.includes('/jobs') || l.msg === 'request completed')
    expect(ofRequest.length).toBeGreaterThan(0)
    for (const l of ofRequest) expect(l.request_id).toBe('req-trace-1')
    const call = lines.find((l) => l.msg === 'provider call')
    expect(call).toMatchObject({ job_id: id, request_id: 'req-trace-1', provider: 'echo', model: 'echo', outcome: 'ok' })
    // A job's other lines (here: one put back) carry both as well.
    lines.length = 0
    const refused = (await post('62', { input: 'another', model: 'echo-fails' }, 'req-trace-2')).json().job_id as number
    await app.pool.runOnce()
    expect(lines.find((l) => l.msg === 'provider call' && l.job_id === refused)).toMatchObject({ request_id: 'req-trace-2', outcome: 'terminal' })
  })
})
