import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fromDbTime } from '../../src/db/time.js'
import { bearer, buildTestApp, type TestApp } from '../helpers.js'
import { anthropicMessage, chatCompletion, openAiError, promptOf, startFakeProvider, type FakeProvider, type Reply } from '../support/fake-provider.js'
import { BASE, createJob, offsetClock, QUIET_ENV, resultOf, row } from '../support/worker-app.js'
import { RUN } from '../support/run-tag.js'

/**
 * One attempt = one claim. Within it, retryable errors are retried with backoff; then the job is
 * retried later (job-level backoff); terminal errors fail it at once. Providers are real HTTP
 * servers on loopback; the pool is driven with runOnce() and a clock the test moves forward.
 */
const clock = offsetClock()
let fake: FakeProvider
let t: TestApp
let auth: Record<string, string>

const unavailable: Reply = { status: 503, json: { error: { message: 'overloaded', type: 'server_error', code: null } } }

beforeAll(async () => {
  fake = await startFakeProvider((call) => {
    const endpoint = call.path.split('/')[1]
    switch (endpoint) {
      case 'flaky2':
        return call.nthForKey <= 2 ? unavailable : { json: chatCompletion(`ok after ${call.nthForKey}`) }
      case 'flaky4':
        return call.nthForKey <= 4 ? unavailable : { json: chatCompletion(`ok after ${call.nthForKey}`) }
      case 'unauthorized':
        return openAiError(401, 'invalid_api_key', 'invalid_request_error', 'Incorrect API key provided')
      case 'quota':
        return openAiError(429, 'insufficient_quota', 'insufficient_quota', 'You exceeded your current quota')
      case 'slowdown':
        // Longer than one attempt may wait: the job's next claim is scheduled after it instead.
        return call.nthForKey === 1
          ? { status: 429, json: { error: { message: 'slow down', type: 'requests', code: 'rate_limit_exceeded' } }, headers: { 'retry-after': '120' } }
          : { json: chatCompletion('after the wait') }
      case 'big':
        return { json: chatCompletion('x'.repeat(3_000)) }
      case 'claude':
        return { json: anthropicMessage(`claude says: ${call.body.messages?.[0]?.content}`) }
      default:
        return { json: chatCompletion(`echo: ${promptOf(call)}`, { prompt_tokens: 12, completion_tokens: 4 }), delayMs: 25 }
    }
  })
  const model = (name: string) => ({ provider: 'openai', url: fake.baseUrl(name) })
  t = await buildTestApp({
    dialect: 'mysql',
    name: `gw_t3_outcomes_${RUN}`,
    clock,
    env: {
      ...QUIET_ENV,
      AI_PROVIDER: 'openai',
      AI_PROVIDER_URL: fake.baseUrl('default'),
      AI_DEFAULT_MODEL: 'gpt-test',
      AI_MODELS: JSON.stringify({
        'flaky-2': model('flaky2'),
        'flaky-4': model('flaky4'),
        unauthorized: model('unauthorized'),
        quota: model('quota'),
        slowdown: model('slowdown'),
        big: model('big'),
        'claude-test': { provider: 'anthropic', url: `${fake.origin}/claude` },
      }),
      JOB_MAX_ATTEMPTS: '3',
      WORKER_CONCURRENCY: '4',
      RESULT_MAX_BYTES: '1024',
    },
  })
  auth = await bearer({ sub: '42' })
}, 60_000)

afterAll(async () => {
  await t?.close()
  await fake?.close()
})

describe('a job run through the in-process pool against real HTTP providers', () => {
  it('succeeds with the documented result_json, sends the idempotency key, and reports durations in Server-Timing', async () => {
    const id = await createJob(t.app, auth, { input: 'hello provider' })
    expect(await t.app.pool.runOnce()).toBe(1)
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 1, error_text: null, input_tokens: 12, output_tokens: 4, lease_owner: null })
    const result = resultOf(r)!
    expect(Object.keys(result).sort()).toEqual(['finish_reason', 'latency_ms', 'model', 'output', 'provider', 'usage'])
    expect(result).toMatchObject({
      output: 'echo: hello provider', finish_reason: 'stop', provider: 'openai', model: 'gpt-test',
      usage: { input_tokens: 12, output_tokens: 4 },
    })
    expect(result.latency_ms).toBeGreaterThanOrEqual(20)
    expect(r.provider_ms).toBe(result.latency_ms)
    expect(r.worker_ms).toBeGreaterThanOrEqual(r.provider_ms!)

    const calls = fake.callsTo('default')
    expect(calls).toHaveLength(1)
    expect(calls[0]!.key).toBe(r.idempotency_key)
    expect(calls[0]!.key).toMatch(/^[0-9a-f]{64}$/)
    expect(calls[0]!.body).toMatchObject({ model: 'gpt-test', messages: [{ role: 'user', content: 'hello provider' }] })

    const res = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: auth })
    expect(res.statusCode).toBe(200)
    const timing = String(res.headers['server-timing'])
    expect(timing).toMatch(/(^|, )db;dur=\d+(\.\d+)?/)
    expect(timing).toContain(`worker;dur=${r.worker_ms}`)
    expect(timing).toContain(`provider;dur=${r.provider_ms}`)
    expect(res.json()).toMatchObject({ status: 'succeeded', attempts: 1, usage: { input_tokens: 12, output_tokens: 4, provider_ms: r.provider_ms, worker_ms: r.worker_ms } })
  })

  it('routes each model to its own provider (AI_MODELS), Anthropic included', async () => {
    const id = await createJob(t.app, auth, { model: 'claude-test', input: 'bonjour' })
    await t.app.pool.runOnce()
    const r = await row(t.app, id)
    expect(r.status).toBe('succeeded')
    expect(resultOf(r)).toMatchObject({ output: 'claude says: bonjour', provider: 'anthropic', model: 'claude-test', finish_reason: 'stop', usage: { input_tokens: 11, output_tokens: 5 } })
    const calls = fake.callsTo('claude')
    expect(calls).toHaveLength(1)
    expect(calls[0]!.path).toBe('/claude/v1/messages')
    expect(calls[0]!.body).toMatchObject({ model: 'claude-test' })
  })

  it('503 twice, then 200: retried within the one attempt, so it succeeds with attempts 1', async () => {
    const id = await createJob(t.app, auth, { model: 'flaky-2', input: 'flaky two' })
    await t.app.pool.runOnce()
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 1, error_text: null })
    expect(resultOf(r)?.output).toBe('ok after 3')
    const calls = fake.callsFor(r.idempotency_key)
    expect(calls.map((c) => c.nthForKey)).toEqual([1, 2, 3])
  })

  it('503 more times than one attempt tries: the job itself is retried after its backoff and succeeds with attempts 2', async () => {
    const id = await createJob(t.app, auth, { model: 'flaky-4', input: 'flaky four' })
    await t.app.pool.runOnce()
    let r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'pending', attempts: 1, lease_owner: null })
    expect(r.error_text).toMatch(/HTTP 503/)
    expect(fake.callsFor(r.idempotency_key)).toHaveLength(3)
    // The job-level backoff keeps it waiting: nothing is claimed before run_after.
    const runAfter = fromDbTime(r.run_after)
    expect(runAfter).toBeGreaterThan(clock.now())
    expect(runAfter - clock.now()).toBeLessThanOrEqual(1_000)
    expect(await t.app.pool.runOnce()).toBe(0)

    clock.advance(1_500)
    expect(await t.app.pool.runOnce()).toBe(1)
    r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 2, error_text: null })
    expect(resultOf(r)?.output).toBe('ok after 5')
    expect(fake.callsFor(r.idempotency_key)).toHaveLength(5)
    expect(new Set(fake.callsFor(r.idempotency_key).map((c) => c.key))).toEqual(new Set([r.idempotency_key]))
  })

  it('a Retry-After longer than an attempt may wait schedules the next claim after it', async () => {
    const id = await createJob(t.app, auth, { model: 'slowdown', input: 'slow down' })
    const claimedAt = clock.now()
    await t.app.pool.runOnce()
    let r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'pending', attempts: 1 })
    expect(fake.callsFor(r.idempotency_key)).toHaveLength(1)
    expect(fromDbTime(r.run_after)).toBeGreaterThanOrEqual(claimedAt + 120_000)

    clock.advance(60_000)
    expect(await t.app.pool.runOnce()).toBe(0)
    clock.advance(61_000)
    expect(await t.app.pool.runOnce()).toBe(1)
    r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 2 })
  })

  for (const [model, code, status] of [['unauthorized', 'invalid_api_key', 401], ['quota', 'insufficient_quota', 429]] as const) {
    it(`${status} ${code} fails the job at once: attempts 1, exactly one provider request, the provider's code kept`, async () => {
      const id = await createJob(t.app, auth, { model, input: `terminal ${code}` })
      await t.app.pool.runOnce()
      const r = await row(t.app, id)
      expect(r).toMatchObject({ status: 'failed', attempts: 1, lease_owner: null })
      expect(r.error_text).toContain(code)
      expect(r.error_text).toContain(`HTTP ${status}`)
      expect(resultOf(r)).toMatchObject({ output: null, finish_reason: 'error', provider: 'openai', model, error: { code, status } })
      expect(fake.callsFor(r.idempotency_key)).toHaveLength(1)

      // Nothing runs it again.
      clock.advance(10 * 60_000)
      expect(await t.app.pool.runOnce()).toBe(0)
      expect(fake.callsFor(r.idempotency_key)).toHaveLength(1)
    })
  }

  it('a result over RESULT_MAX_BYTES fails the job with a clear error_text instead of being stored', async () => {
    const id = await createJob(t.app, auth, { model: 'big', input: 'say a lot' })
    await t.app.pool.runOnce()
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'failed', attempts: 1, result_json: null })
    expect(r.error_text).toMatch(/RESULT_MAX_BYTES \(1024\)/)
    expect(r.error_text).toMatch(/\d{4,} bytes/)
    expect(fake.callsFor(r.idempotency_key)).toHaveLength(1)
    const res = await t.app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: auth })
    expect(res.json()).toMatchObject({ status: 'failed', result: null, error: r.error_text })
  })
})
