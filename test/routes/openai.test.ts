/**
 * The OpenAI-compatible endpoint (SPEC §11) with the official `openai` SDK as its client, against
 * a real listening gateway whose pool runs the jobs: every call is a job in the table, streamed
 * text equals the stored output, and errors reach the SDK as its own error classes.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { findJob } from '../../src/db/jobs-repository.js'
import { DIALECTS, freshDatabase, REDIS_URL, signToken, testConfig, waitFor } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'

const MODELS = {
  'echo-stream': { provider: 'echo', delta_ms: 5 },
  // The first try of each job breaks after three words; its retry (within the attempt) says the same again.
  'echo-breaks': { provider: 'echo', delta_ms: 5, break_after: 3, fail_times: 1 },
  'echo-down': { provider: 'echo', fail_status: 503 },
  'echo-refuses': { provider: 'echo', fail_status: 400 },
}

async function countJobs(app: FastifyInstance): Promise<number> {
  return Number((await app.db.db.selectFrom('ai_jobs').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
}

describe.each(DIALECTS)('the OpenAI-compatible endpoint (%s)', (dialect) => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  let baseURL: string
  let client: OpenAI
  let userToken: string
  let seq = 0
  const resultDir = mkdtempSync(join(tmpdir(), 'gw_openai_results_'))
  /** A fresh owner per test, so the dedupe window and rate limits of one never meet another's. */
  const freshUser = async () => signToken({ sub: String(1000 + ++seq) })
  const clientFor = (apiKey: string, options: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) => new OpenAI({ apiKey, baseURL, maxRetries: 0, ...options })

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_openai_${dialect}_${RUN}`)
    cleanup = db.cleanup
    app = await buildApp(testConfig({
      DATABASE_URL: db.url, REDIS_URL, WP_TABLE_PREFIX: `wpoa${RUN}_`, RATE_LIMIT_MAX: '0', JOB_MAX_ATTEMPTS: '1',
      AI_MODELS: JSON.stringify(MODELS),
      // Outputs over 1 KiB go to the result store: the answers must still carry their text.
      RESULT_INLINE_MAX_BYTES: '1024', RESULT_STORE_DIR: resultDir,
    }), { logger: false })
    await app.listen({ port: 0, host: '127.0.0.1' })
    baseURL = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}${BASE}/openai`
    userToken = await freshUser()
    client = clientFor(userToken)
  })
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
    rmSync(resultDir, { recursive: true, force: true })
  })

  it('answers a result kept in the result store with its whole text, plain and streamed', async () => {
    const long = 'a long answer '.repeat(200)
    const completion = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: long }] })
    expect(completion.choices[0]!.message.content).toBe(long)
    const row = (await findJob(app.db.db, Number(completion.id.replace('chatcmpl-', ''))))!
    expect(row.result_json).toBeNull()
    expect(row.result_ref).toBeTruthy()
    const stream = await clientFor(await freshUser()).chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: `${long}!` }], stream: true })
    let text = ''
    for await (const ch of stream) text += ch.choices[0]?.delta.content ?? ''
    expect(text).toBe(`${long}!`)
  })

  it('answers a completion from a job, which GET /jobs/:id shows with the same output', async () => {
    const completion = await client.chat.completions.create({
      model: 'echo',
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: [{ type: 'text', text: 'hello' }, { type: 'text', text: 'there' }] }],
      temperature: 0.2, max_completion_tokens: 50, user: 'end-user-7',
    })
    expect(completion.object).toBe('chat.completion')
    expect(completion.model).toBe('echo')
    const jobId = Number(completion.id.replace('chatcmpl-', ''))
    expect(completion.id).toBe(`chatcmpl-${jobId}`)
    expect(completion.choices).toHaveLength(1)
    expect(completion.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'hello\nthere' })
    expect(completion.choices[0]!.finish_reason).toBe('stop')
    expect(completion.usage!.total_tokens).toBe(completion.usage!.prompt_tokens + completion.usage!.completion_tokens)
    expect(completion.usage!.completion_tokens).toBeGreaterThan(0)

    const row = (await findJob(app.db.db, jobId))!
    expect(row.status).toBe('succeeded')
    expect(row.user_id).toBe(1001)
    expect(JSON.parse(row.result_json!).output).toBe('hello\nthere')
    const job = await fetch(`${baseURL.replace('/openai', '')}/jobs/${jobId}`, { headers: { authorization: `Bearer ${userToken}` } }).then((r) => r.json() as Promise<any>)
    expect(job.result.output).toBe(completion.choices[0]!.message.content)
    expect(job.usage.input_tokens).toBe(completion.usage!.prompt_tokens)
  })

  it('streams chunks whose text, joined, is the stored output, then the usage and [DONE]', async () => {
    const text = 'the quick brown fox jumps over the lazy dog'
    const stream = await client.chat.completions.create({ model: 'echo-stream', messages: [{ role: 'user', content: text }], stream: true, stream_options: { include_usage: true } })
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = []
    for await (const c of stream) chunks.push(c)
    const pieces = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? ''))
    expect(pieces.join('')).toBe(text)
    // Streamed as it ran: more than one piece of text.
    expect(pieces.filter((p) => p !== '').length).toBeGreaterThan(1)
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant')
    const finishing = chunks.filter((c) => c.choices[0]?.finish_reason)
    expect(finishing.map((c) => c.choices[0]!.finish_reason)).toEqual(['stop'])
    const last = chunks.at(-1)!
    expect(last.choices).toEqual([])
    expect(last.usage!.completion_tokens).toBeGreaterThan(0)
    const jobId = Number(last.id.replace('chatcmpl-', ''))
    expect(new Set(chunks.map((c) => c.id))).toEqual(new Set([last.id]))
    const row = (await findJob(app.db.db, jobId))!
    expect(JSON.parse(row.result_json!).output).toBe(text)
  })

  it('a stream that breaks and whose retry repeats the text still arrives whole', async () => {
    const text = 'one two three four five six'
    const resets: number[] = []
    const off = app.jobEvents.onDelta((d) => {
      if ('reset' in d) resets.push(d.jobId)
    })
    const stream = await clientFor(await freshUser()).chat.completions.create({ model: 'echo-breaks', messages: [{ role: 'user', content: text }], stream: true })
    let joined = ''
    let finish: string | null = null
    let id = ''
    for await (const c of stream) {
      id = c.id
      joined += c.choices[0]?.delta.content ?? ''
      finish = c.choices[0]?.finish_reason ?? finish
    }
    off()
    expect(joined).toBe(text)
    expect(finish).toBe('stop')
    // The job's stream did break and start over.
    expect(resets).toContain(Number(id.replace('chatcmpl-', '')))
  })

  it('an unknown model is a 404 model_not_found (NotFoundError) and creates no job', async () => {
    const before = await countJobs(app)
    const err = await client.chat.completions.create({ model: 'gpt-nope', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.NotFoundError)
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).code).toBe('model_not_found')
    expect((err as InstanceType<typeof OpenAI.NotFoundError>).param).toBe('model')
    expect(await countJobs(app)).toBe(before)
  })

  it('a wrong key is a 401 invalid_api_key (AuthenticationError)', async () => {
    const err = await clientFor('not-a-token').chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError)
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('invalid_api_key')
    const forged = await signToken({ sub: '5' }, { secret: 'another-secret-another-secret-another' })
    await expect(clientFor(forged).models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError)
  })

  it('a visitor token is refused with 403 (PermissionDeniedError), on both routes', async () => {
    const visitor = clientFor(await signToken({ sub: '0', sid: `visitor-${RUN}-abcdefgh` }))
    const before = await countJobs(app)
    const err = await visitor.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.PermissionDeniedError)
    expect((err as InstanceType<typeof OpenAI.APIError>).code).toBe('permission_denied')
    await expect(visitor.models.list()).rejects.toBeInstanceOf(OpenAI.PermissionDeniedError)
    expect(await countJobs(app)).toBe(before)
  })

  it('lists the allowed models', async () => {
    const ids: string[] = []
    for await (const model of client.models.list()) {
      expect(model.object).toBe('model')
      expect(model.owned_by).toBe('echo')
      expect(Number.isInteger(model.created)).toBe(true)
      ids.push(model.id)
    }
    expect(ids.sort()).toEqual(['echo', ...Object.keys(MODELS)].sort())
  })

  it('n > 1, tools and image parts are 400 with the param named (BadRequestError)', async () => {
    const before = await countJobs(app)
    const cases: [Record<string, unknown>, string][] = [
      [{ n: 2 }, 'n'],
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 'tools'],
      [{ messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }] }, 'messages[0].content[1].type'],
      [{ messages: [{ role: 'tool', content: 'x', tool_call_id: 't' }] }, 'messages[0].role'],
      [{ temperature: 3 }, 'temperature'],
      [{ max_tokens: 999_999 }, 'max_tokens'],
      [{ messages: [] }, 'messages'],
      [{ messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
    ]
    for (const [extra, param] of cases) {
      const err = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'x' }], ...extra } as never).catch((e: unknown) => e)
      expect(err, param).toBeInstanceOf(OpenAI.BadRequestError)
      const e = err as InstanceType<typeof OpenAI.BadRequestError>
      expect(e.param, JSON.stringify(e.error)).toBe(param)
      expect(e.type).toBe('invalid_request_error')
    }
    expect(await countJobs(app)).toBe(before)
  })

  it('a failed job is a 502 api_error with the provider code, which the SDK does not retry', async () => {
    const retrying = clientFor(await freshUser(), { maxRetries: 2 })
    const before = await countJobs(app)
    const err = await retrying.chat.completions.create({ model: 'echo-down', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(OpenAI.InternalServerError)
    const e = err as InstanceType<typeof OpenAI.APIError>
    expect(e.status).toBe(502)
    expect(e.type).toBe('api_error')
    expect(e.code).toBe('echo_simulated_failure')
    expect(e.headers?.get('x-should-retry')).toBe('false')
    expect(await countJobs(app)).toBe(before + 1)

    const refused = await client.chat.completions.create({ model: 'echo-refuses', messages: [{ role: 'user', content: 'x' }] }).catch((x: unknown) => x)
    expect(refused).toBeInstanceOf(OpenAI.BadRequestError)
  })

  it('an SDK retry after a cut connection finds the same job: one row in the table', async () => {
    const token = await freshUser()
    const before = await countJobs(app)
    let attempts = 0
    const cutting: typeof fetch = async (url, init) => {
      attempts++
      if (attempts > 1) return fetch(url, init)
      // The first attempt reaches the gateway and creates the job; then its connection is cut.
      const controller = new AbortController()
      const pending = fetch(url, { ...init, signal: controller.signal }).catch(() => undefined)
      await waitFor(async () => ((await countJobs(app)) > before ? true : undefined), 10_000, 'the first job')
      controller.abort()
      await pending
      throw new TypeError('fetch failed')
    }
    const sdk = clientFor(token, { maxRetries: 2, fetch: cutting })
    const { data, response } = await sdk.chat.completions.create({ model: 'echo-stream', messages: [{ role: 'user', content: 'retry me please' }] }).withResponse()
    expect(attempts).toBe(2)
    expect(data.choices[0]!.message.content).toBe('retry me please')
    expect(response.headers.get('idempotent-replayed')).toBe('true')
    expect(await countJobs(app)).toBe(before + 1)
  })

  it('honours an Idempotency-Key header: the same key answers the same job, another body with it is refused', async () => {
    const sdk = clientFor(await freshUser())
    const key = `key-${RUN}-${dialect}`
    const body = { model: 'echo', messages: [{ role: 'user' as const, content: 'keyed' }] }
    const first = await sdk.chat.completions.create(body, { headers: { 'Idempotency-Key': key } }).withResponse()
    const again = await sdk.chat.completions.create(body, { headers: { 'Idempotency-Key': key } }).withResponse()
    expect(again.data.id).toBe(first.data.id)
    expect(first.response.headers.get('idempotent-replayed')).toBeNull()
    expect(again.response.headers.get('idempotent-replayed')).toBe('true')
    const other = await sdk.chat.completions.create({ ...body, messages: [{ role: 'user', content: 'different' }] }, { headers: { 'Idempotency-Key': key } }).catch((e: unknown) => e)
    expect(other).toBeInstanceOf(OpenAI.UnprocessableEntityError)
    expect((other as InstanceType<typeof OpenAI.APIError>).code).toBe('idempotency_key_reused')
  })

  it('errors outside the SDK are in the OpenAI shape too: bad JSON, unknown route', async () => {
    const bad = await fetch(`${baseURL}/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${userToken}`, 'content-type': 'application/json' }, body: '{"model":' })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as any).error).toMatchObject({ type: 'invalid_request_error', param: null })
    const unknown = await fetch(`${baseURL}/embeddings`, { method: 'POST', headers: { authorization: `Bearer ${userToken}`, 'content-type': 'application/json' }, body: '{}' })
    expect(unknown.status).toBe(404)
    expect(((await unknown.json()) as any).error).toMatchObject({ type: 'invalid_request_error', code: 'unknown_url' })
    const none = await fetch(`${baseURL}/models`)
    expect(none.status).toBe(401)
    expect(((await none.json()) as any).error.code).toBe('invalid_api_key')
  })
})
