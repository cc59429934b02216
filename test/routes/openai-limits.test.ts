/**
 * The OpenAI-compatible endpoint under the gateway's limits and troubles, with the official SDK
 * (MariaDB + Redis): budgets (429 insufficient_quota, never retried), the rate limit
 * (429 rate_limit_exceeded), a canceled job, a client that goes away, and a broken stream whose
 * retry answers differently (the stream errors out; the job goes on).
 */
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { findJob } from '../../src/db/jobs-repository.js'
import { freshDatabase, REDIS_URL, signToken, testConfig, waitFor } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { RUN } from '../support/run-tag.js'
import { openAiStream } from '../providers/streams.js'

const BASE = '/wp-json/ai/v1'

describe('the OpenAI-compatible endpoint under limits (MariaDB)', () => {
  let app: FastifyInstance
  let fake: FakeProvider
  let cleanup: () => Promise<void>
  let baseURL: string
  let env: Record<string, string>
  let seq = 0
  const freshUser = async () => signToken({ sub: String(2000 + ++seq) })
  const clientFor = (apiKey: string, options: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) => new OpenAI({ apiKey, baseURL, maxRetries: 0, ...options })
  const jobsOf = async (userId: number) => app.db.db.selectFrom('ai_jobs').selectAll().where('user_id', '=', userId).execute()

  beforeAll(async () => {
    // The first call for each job streams "Hello " and then an error event; its retry answers otherwise.
    fake = await startFakeProvider((call) => {
      if (call.path.startsWith('/hold/')) return 'hold'
      const sse = { 'content-type': 'text/event-stream' }
      if (call.nthForKey === 1) {
        const first = openAiStream(['Hello '], { done: false }).split('\n\n')[1]!
        return { text: `${first}\n\ndata: {"error":{"message":"upstream stream cut","type":"server_error"}}\n\n`, headers: sse, delayMs: 150 }
      }
      return { text: openAiStream(['Goodbye', ' world']), headers: sse }
    })
    const db = await freshDatabase('mysql', `gw_openai_limits_${RUN}`)
    cleanup = db.cleanup
    env = {
      DATABASE_URL: db.url, REDIS_URL, WP_TABLE_PREFIX: `wpol${RUN}_`, RATE_LIMIT_MAX: '3', JOB_MAX_ATTEMPTS: '1',
      AI_MODELS: JSON.stringify({
        'echo-slow': { provider: 'echo', delay_ms: 1500 },
        'gpt-fake': { provider: 'openai', url: fake.baseUrl('p'), api_key: 'sk-test' },
        'gpt-hold': { provider: 'openai', url: fake.baseUrl('hold'), api_key: 'sk-test' },
      }),
      // A call reserves its input plus max_tokens (or the model's cap, 4096): without a small
      // max_tokens no call fits in 1,000 tokens a day.
      AI_BUDGETS: JSON.stringify({ default: { tokens_per_day: 1000 } }),
    }
    app = await buildApp(testConfig(env), { logger: false })
    await app.listen({ port: 0, host: '127.0.0.1' })
    baseURL = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}${BASE}/openai`
  })
  afterAll(async () => {
    await app?.close()
    await fake?.close()
    await cleanup?.()
  })

  it('a call past the budget is a 429 insufficient_quota the SDK does not retry', async () => {
    let requests = 0
    const counting: typeof fetch = (url, init) => {
      requests++
      return fetch(url, init)
    }
    const sdk = clientFor(await freshUser(), { maxRetries: 2, fetch: counting })
    const fits = await sdk.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'small' }], max_tokens: 20 })
    expect(fits.choices[0]!.message.content).toBe('small')
    requests = 0
    const err = await sdk.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'big' }] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    const e = err as InstanceType<typeof OpenAI.RateLimitError>
    expect(e.code).toBe('insufficient_quota')
    expect(e.type).toBe('insufficient_quota')
    expect((e.error as any).budget).toMatchObject({ scope: 'default', window: 'day', limit: 1000 })
    expect(Number(e.headers?.get('retry-after'))).toBeGreaterThan(0)
    expect(requests).toBe(1)
  })

  it('past RATE_LIMIT_MAX a call is a 429 rate_limit_exceeded with Retry-After', async () => {
    const token = await freshUser()
    const sdk = clientFor(token)
    for (let i = 0; i < 3; i++) await sdk.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: `n${i}` }], max_tokens: 5 })
    const err = await sdk.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'one more' }], max_tokens: 5 }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.RateLimitError)
    const e = err as InstanceType<typeof OpenAI.RateLimitError>
    expect(e.code).toBe('rate_limit_exceeded')
    expect(Number(e.headers?.get('retry-after'))).toBeGreaterThan(0)
    expect(e.headers?.get('ratelimit-policy')).toContain('q=3')
    // A replay inside the dedupe window is no new create: it still answers.
    const again = await sdk.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'n0' }], max_tokens: 5 }).withResponse()
    expect(again.response.headers.get('idempotent-replayed')).toBe('true')
  })

  it('a job canceled while the call waits is a 409 job_canceled, not retried', async () => {
    const token = await freshUser()
    const sdk = clientFor(token, { maxRetries: 2 })
    const userId = 2000 + seq
    const pending = sdk.chat.completions.create({ model: 'echo-slow', messages: [{ role: 'user', content: 'cancel me' }], max_tokens: 5 }).catch((e: unknown) => e)
    const job = await waitFor(async () => (await jobsOf(userId))[0], 10_000, 'the job')
    const cancel = await fetch(`${baseURL.replace('/openai', '')}/jobs/${job.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
    expect(cancel.status).toBe(200)
    const err = await pending
    expect(err).toBeInstanceOf(OpenAI.ConflictError)
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('job_canceled')
    expect(await jobsOf(userId)).toHaveLength(1)
  })

  it('a client that goes away stops waiting; the job still runs to its end', async () => {
    const token = await freshUser()
    const userId = 2000 + seq
    const controller = new AbortController()
    const pending = clientFor(token).chat.completions.create({ model: 'gpt-hold', messages: [{ role: 'user', content: 'leave' }], max_tokens: 5 }, { signal: controller.signal }).catch((e: unknown) => e)
    const job = await waitFor(async () => (await jobsOf(userId))[0], 10_000, 'the job')
    await waitFor(() => (app.jobWatcher.size > 0 && fake.heldCount > 0 ? true : undefined), 10_000, 'the wait and the provider call to start')
    controller.abort()
    expect(await pending).toBeInstanceOf(OpenAI.APIUserAbortError)
    // Nothing follows the job any more, while its provider call is still held open …
    await waitFor(() => (app.jobWatcher.size === 0 ? true : undefined), 10_000, 'the wait to stop')
    expect(fake.heldCount).toBe(1)
    expect((await findJob(app.db.db, job.id))!.status).toBe('running')
    // … and it still succeeds once the provider answers.
    fake.release()
    const done = await waitFor(async () => {
      const row = await findJob(app.db.db, job.id)
      return row?.status === 'succeeded' ? row : undefined
    }, 15_000, 'the job to succeed')
    expect(JSON.parse(done.result_json!).output).toBe('released')
  })

  it('a broken stream whose retry answers differently ends with a stream_reset error; the job keeps the retry\'s answer', async () => {
    const token = await freshUser()
    const userId = 2000 + seq
    const stream = await clientFor(token).chat.completions.create({ model: 'gpt-fake', messages: [{ role: 'user', content: 'hi' }], stream: true, max_tokens: 5 })
    let received = ''
    const err = await (async () => {
      for await (const c of stream) received += c.choices[0]?.delta.content ?? ''
    })().catch((e: unknown) => e)
    expect(received).toBe('Hello ')
    expect(err).toBeInstanceOf(OpenAI.APIError)
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('stream_reset')
    const [job] = await jobsOf(userId)
    const done = await waitFor(async () => {
      const row = await findJob(app.db.db, job!.id)
      return row?.status === 'succeeded' ? row : undefined
    }, 15_000, 'the job to succeed')
    expect(JSON.parse(done.result_json!).output).toBe('Goodbye world')
  })

  it('a replica shutting down answers a waiting call 503; the SDK\'s retry waits for the same job on another replica', async () => {
    const token = await freshUser()
    const userId = 2000 + seq
    // Replica A takes the call and runs nothing; this file's app runs the jobs and takes the retry.
    const replica = await buildApp(testConfig({ ...env, WORKER_CONCURRENCY: '0' }), { logger: false, migrate: false })
    await replica.listen({ port: 0, host: '127.0.0.1' })
    const replicaUrl = `http://127.0.0.1:${(replica.server.address() as AddressInfo).port}${BASE}/openai`
    const statuses: number[] = []
    let calls = 0
    const balancing: typeof fetch = async (url, init) => {
      const target = calls++ === 0 ? String(url).replace(baseURL, replicaUrl) : String(url)
      const res = await fetch(target, init)
      statuses.push(res.status)
      return res
    }
    const sdk = clientFor(token, { maxRetries: 2, fetch: balancing })
    const pending = sdk.chat.completions.create({ model: 'gpt-hold', messages: [{ role: 'user', content: 'move me' }], max_tokens: 5 }).withResponse()
    await waitFor(() => (fake.heldCount > 0 && replica.jobWatcher.size > 0 ? true : undefined), 10_000, 'the call to wait on replica A')
    await replica.close()
    await waitFor(() => (statuses.length > 0 ? true : undefined), 10_000, 'replica A to answer')
    expect(statuses[0]).toBe(503)
    await waitFor(() => (app.jobWatcher.size > 0 ? true : undefined), 10_000, 'the retry to wait here')
    fake.release()
    const { data, response } = await pending
    expect(data.choices[0]!.message.content).toBe('released')
    expect(response.headers.get('idempotent-replayed')).toBe('true')
    expect(await jobsOf(userId)).toHaveLength(1)
  })
})
