import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createReferenceWorker, type ProviderSettings, type ReferenceWorker, type RunJob, type WorkerLogger } from '../../examples/worker/reference-worker.js'
import { bodySha256, buildJwks, generateDevSigningKey, signDispatchJwt, type DispatchSigningKey } from '../../src/dispatch/jwt.js'
import { verifyWebhookSignature } from '../../src/webhook/verify-signature.js'
import { chatCompletion, openAiError, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'

/** A stand-in for the gateway: serves the JWKS and receives result webhooks. */
interface Delivery {
  headers: IncomingHttpHeaders
  rawBody: Buffer
  receivedAtMs: number
}

const AUDIENCE = 'http://worker.internal.test/jobs'
const WEBHOOK_SECRET = 'whsec_' + Buffer.from('reference worker test secret!').toString('base64')
const WEBHOOK_PATH = '/wp-json/ai/v1/webhook'

let signingKey: DispatchSigningKey
let gateway: Server
let gatewayOrigin: string
let deliveries: Delivery[] = []
/** Status codes the webhook answers with, in order; 204 once they run out. */
let webhookAnswers: number[] = []
let deliveryWaiters: (() => void)[] = []
const workers: ReferenceWorker[] = []

beforeAll(async () => {
  signingKey = generateDevSigningKey()
  gateway = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/wp-json/ai/v1/.well-known/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(buildJwks(signingKey)))
      return
    }
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      if (req.method === 'POST' && req.url === WEBHOOK_PATH) {
        deliveries.push({ headers: req.headers, rawBody: Buffer.concat(chunks), receivedAtMs: Date.now() })
        res.writeHead(webhookAnswers.shift() ?? 204)
        res.end()
        for (const wake of deliveryWaiters.splice(0)) wake()
        return
      }
      res.writeHead(404)
      res.end()
    })
  })
  await new Promise<void>((resolve) => gateway.listen(0, '127.0.0.1', resolve))
  gatewayOrigin = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`
})

afterAll(async () => {
  await new Promise<void>((resolve) => gateway.close(() => resolve()))
})

afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.close()))
  deliveries = []
  webhookAnswers = []
  deliveryWaiters = []
})

async function startWorker(runJob?: RunJob, extra: { provider?: ProviderSettings; logger?: WorkerLogger } = {}): Promise<{ url: string; worker: ReferenceWorker }> {
  const worker = createReferenceWorker({
    ...extra,
    // Job-level provider retries without real waiting.
    sleep: async () => {},
    port: 0,
    host: '127.0.0.1',
    jwksUrl: `${gatewayOrigin}/wp-json/ai/v1/.well-known/jwks.json`,
    audience: AUDIENCE,
    callbackOrigin: gatewayOrigin,
    webhookSecret: WEBHOOK_SECRET,
    retry: { baseDelayMs: 5, maxDelayMs: 20 },
    ...(runJob ? { runJob } : {}),
  })
  workers.push(worker)
  return { url: await worker.listen(), worker }
}

async function deliveriesReach(count: number, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (deliveries.length < count) {
    const remaining = deadline - Date.now()
    if (remaining <= 0) throw new Error(`expected ${count} deliveries, got ${deliveries.length}`)
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, remaining)
      deliveryWaiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
}

interface DispatchOverrides {
  attempt?: number
  callbackUrl?: string
  authorization?: string
  key?: DispatchSigningKey
  request?: Record<string, unknown>
  idempotencyKey?: string
}

async function signedDispatch(overrides: DispatchOverrides = {}): Promise<{ body: Buffer; authorization: string }> {
  const idempotencyKey = overrides.idempotencyKey ?? 'c'.repeat(64)
  const body = Buffer.from(
    JSON.stringify({
      job_id: 17,
      idempotency_key: idempotencyKey,
      attempt: overrides.attempt ?? 1,
      request: overrides.request ?? { model: 'echo', input: 'hello from the test' },
      callback_url: overrides.callbackUrl ?? `${gatewayOrigin}${WEBHOOK_PATH}`,
      request_id: 'req-1',
    }),
  )
  const token = await signDispatchJwt(overrides.key ?? signingKey, {
    sub: 5,
    jti: idempotencyKey,
    aud: AUDIENCE,
    bodySha256: bodySha256(body),
    nowMs: Date.now(),
  })
  return { body, authorization: overrides.authorization ?? `Bearer ${token}` }
}

async function post(workerUrl: string, signed: { body: Buffer; authorization: string }): Promise<number> {
  const res = await request(`${workerUrl}/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: signed.authorization },
    body: signed.body,
  })
  await res.body.dump()
  return res.statusCode
}

async function dispatch(workerUrl: string, overrides: DispatchOverrides = {}) {
  return post(workerUrl, await signedDispatch(overrides))
}

function acceptedWebhook(delivery: Delivery) {
  return verifyWebhookSignature({ rawBody: delivery.rawBody, headers: delivery.headers, secrets: [WEBHOOK_SECRET], nowMs: Date.now() })
}

describe('reference worker', () => {
  it('answers 202 and posts a Standard-Webhooks-signed result that echoes the attempt', async () => {
    const { url } = await startWorker()
    expect(await dispatch(url, { attempt: 3 })).toBe(202)
    await deliveriesReach(1)

    const [delivery] = deliveries
    expect(acceptedWebhook(delivery!)).toMatchObject({ ok: true, scheme: 'standard' })
    expect(delivery!.headers['content-type']).toBe('application/json')
    expect(JSON.parse(delivery!.rawBody.toString())).toEqual({
      job_id: 17,
      idempotency_key: 'c'.repeat(64),
      status: 'succeeded',
      // The gateway's own echo provider ran it: one token per 4 UTF-8 bytes (19 bytes → 5).
      result_json: {
        output: 'hello from the test',
        finish_reason: 'stop',
        provider: 'echo',
        model: 'echo',
        usage: { input_tokens: 5, output_tokens: 5 },
        latency_ms: expect.any(Number),
      },
      usage: { tokens: 5, ms: expect.any(Number) },
      attempt: 3,
    })
  })

  it('retries until a 2xx: 500, 500, 204 makes three deliveries of one message', async () => {
    webhookAnswers = [500, 500]
    const { url, worker } = await startWorker()
    expect(await dispatch(url)).toBe(202)
    await deliveriesReach(3)
    await worker.idle()

    expect(deliveries).toHaveLength(3)
    for (const delivery of deliveries) expect(acceptedWebhook(delivery).ok).toBe(true)
    // One message id for every try, so the gateway's replay guard sees a re-delivery.
    expect(new Set(deliveries.map((d) => d.headers['webhook-id'])).size).toBe(1)
    expect(webhookAnswers).toEqual([])
  })

  it('retries every non-2xx answer, a 4xx included, until a 2xx', async () => {
    webhookAnswers = [403, 404, 400]
    const { url, worker } = await startWorker()
    expect(await dispatch(url)).toBe(202)
    await deliveriesReach(4)
    await worker.idle()
    expect(deliveries).toHaveLength(4)
    expect(new Set(deliveries.map((d) => d.headers['webhook-id'])).size).toBe(1)
  })

  it('gives up after maxTries and runs nothing more', async () => {
    webhookAnswers = Array.from({ length: 20 }, () => 503)
    const worker = createReferenceWorker({
      port: 0, host: '127.0.0.1', jwksUrl: `${gatewayOrigin}/wp-json/ai/v1/.well-known/jwks.json`, audience: AUDIENCE,
      callbackOrigin: gatewayOrigin, webhookSecret: WEBHOOK_SECRET, retry: { maxTries: 3 }, sleep: async () => {},
    })
    workers.push(worker)
    expect(await dispatch(await worker.listen())).toBe(202)
    await deliveriesReach(3)
    await worker.idle()
    expect(deliveries).toHaveLength(3)
  })

  it('refuses a replayed token (the same signed request twice) and runs the job once', async () => {
    let runs = 0
    const { url, worker } = await startWorker(async (req) => {
      runs++
      return { output: String(req.input), finish_reason: 'stop', usage: { input_tokens: 1, output_tokens: 1 }, provider: 'test', model: 'test', latency_ms: 1 }
    })
    const signed = await signedDispatch()
    expect(await post(url, signed)).toBe(202)
    expect(await post(url, signed)).toBe(401)
    await deliveriesReach(1)
    await worker.idle()
    expect(runs).toBe(1)
    expect(deliveries).toHaveLength(1)
  })

  it('refuses a body that differs from the signed body_sha256, and a token for another audience', async () => {
    const { url, worker } = await startWorker()
    const signed = await signedDispatch()
    const tampered = Buffer.from(signed.body.toString().replace('hello from the test', 'hello from elsewhere'))
    expect(await post(url, { body: tampered, authorization: signed.authorization })).toBe(401)
    const otherAudience = await signDispatchJwt(signingKey, { sub: 5, jti: 'c'.repeat(64), aud: 'http://other.test/jobs', bodySha256: bodySha256(signed.body), nowMs: Date.now() })
    expect(await post(url, { body: signed.body, authorization: `Bearer ${otherAudience}` })).toBe(401)
    const expired = await signDispatchJwt(signingKey, { sub: 5, jti: 'c'.repeat(64), aud: AUDIENCE, bodySha256: bodySha256(signed.body), nowMs: Date.now() - 120_000 })
    expect(await post(url, { body: signed.body, authorization: `Bearer ${expired}` })).toBe(401)
    await worker.idle()
    expect(deliveries).toHaveLength(0)
  })

  it('logs the verified token: kid and claims', async () => {
    const lines: { details: Record<string, unknown>; message: string }[] = []
    const logger: WorkerLogger = {
      info: (details, message) => lines.push({ details: details as Record<string, unknown>, message }),
      warn() {},
      error() {},
    }
    const { url } = await startWorker(undefined, { logger })
    expect(await dispatch(url, { attempt: 2 })).toBe(202)
    await deliveriesReach(1)
    const verified = lines.find((l) => l.message.startsWith('dispatch verified'))
    expect(verified?.details).toMatchObject({ job_id: 17, attempt: 2, kid: signingKey.kid, alg: 'ES256', sub: '5', jti: 'c'.repeat(64), aud: AUDIENCE })
  })

  it('reports a job that throws as failed, with its error text', async () => {
    const { url } = await startWorker(async () => {
      throw new Error('provider exploded')
    })
    expect(await dispatch(url, { attempt: 2 })).toBe(202)
    await deliveriesReach(1)
    expect(acceptedWebhook(deliveries[0]!).ok).toBe(true)
    expect(JSON.parse(deliveries[0]!.rawBody.toString())).toMatchObject({ status: 'failed', error_text: 'provider exploded', attempt: 2 })
  })

  it('refuses a callback_url outside CALLBACK_ORIGIN and posts nothing', async () => {
    let ran = false
    const { url, worker } = await startWorker(async (request) => {
      ran = true
      return { output: String(request.input), finish_reason: 'stop', usage: { input_tokens: 0, output_tokens: 0 }, provider: 'test', model: 'test', latency_ms: 0 }
    })
    const elsewhere = `http://localhost:${new URL(gatewayOrigin).port}${WEBHOOK_PATH}`
    expect(await dispatch(url, { callbackUrl: elsewhere })).toBe(403)
    expect(await dispatch(url, { callbackUrl: `https://127.0.0.1:${new URL(gatewayOrigin).port}${WEBHOOK_PATH}` })).toBe(403)
    await worker.idle()
    expect(ran).toBe(false)
    expect(deliveries).toHaveLength(0)
  })

  it('answers 401 to a bad JWT and runs nothing', async () => {
    const { url, worker } = await startWorker()
    expect(await dispatch(url, { key: generateDevSigningKey() })).toBe(401)
    expect(await dispatch(url, { authorization: 'Bearer not.a.jwt' })).toBe(401)
    expect(await dispatch(url, { authorization: '' })).toBe(401)
    await worker.idle()
    expect(deliveries).toHaveLength(0)
  })
})

describe('reference worker on a real provider (OpenAI-compatible)', () => {
  let provider: FakeProvider
  beforeAll(async () => {
    provider = await startFakeProvider()
  })
  afterAll(async () => {
    await provider.close()
  })

  const settings = (): ProviderSettings => ({ provider: 'openai', url: provider.baseUrl('w'), apiKey: 'sk-test', defaultModel: 'gpt-test' })

  it('calls the provider through the gateway modules, with the job key as Idempotency-Key', async () => {
    provider.behavior = () => ({ json: chatCompletion('from the provider', { prompt_tokens: 9, completion_tokens: 4 }) })
    const { url } = await startWorker(undefined, { provider: settings() })
    const key = 'd'.repeat(64)
    expect(await dispatch(url, { idempotencyKey: key, request: { model: 'gpt-test', messages: [{ role: 'user', content: 'Say hi' }], params: { max_tokens: 20 } } })).toBe(202)
    await deliveriesReach(1)
    const calls = provider.callsFor(key)
    expect(calls).toHaveLength(1)
    expect(calls[0]!.path).toBe('/w/v1/chat/completions')
    expect(calls[0]!.headers.authorization).toBe('Bearer sk-test')
    expect(calls[0]!.body).toMatchObject({ model: 'gpt-test', messages: [{ role: 'user', content: 'Say hi' }], max_tokens: 20 })
    const body = JSON.parse(deliveries[0]!.rawBody.toString())
    expect(body).toMatchObject({
      status: 'succeeded',
      result_json: { output: 'from the provider', finish_reason: 'stop', provider: 'openai', model: 'gpt-test', usage: { input_tokens: 9, output_tokens: 4 } },
      usage: { tokens: 4 },
    })
  })

  it('runs again after retryable failures, then reports the success', async () => {
    const key = 'e'.repeat(64)
    provider.behavior = (call) => (call.nthForKey <= 4 ? { status: 503, json: { error: { message: 'busy' } } } : { json: chatCompletion('finally') })
    const { url } = await startWorker(undefined, { provider: settings() })
    expect(await dispatch(url, { idempotencyKey: key, request: { model: 'gpt-test', input: 'retry me' } })).toBe(202)
    await deliveriesReach(1, 15_000)
    expect(provider.callsFor(key).length).toBe(5)
    expect(JSON.parse(deliveries[0]!.rawBody.toString())).toMatchObject({ status: 'succeeded', result_json: { output: 'finally' } })
  })

  it('fails the job at once on a terminal provider error, with its message as error_text', async () => {
    const key = 'f'.repeat(64)
    provider.behavior = () => openAiError(401, 'invalid_api_key')
    const { url } = await startWorker(undefined, { provider: settings() })
    expect(await dispatch(url, { idempotencyKey: key, attempt: 2, request: { model: 'gpt-test', input: 'no key' } })).toBe(202)
    await deliveriesReach(1)
    expect(provider.callsFor(key)).toHaveLength(1)
    const body = JSON.parse(deliveries[0]!.rawBody.toString())
    expect(body).toMatchObject({ status: 'failed', attempt: 2 })
    expect(body.error_text).toMatch(/401/)
    expect(body.error_text).toMatch(/invalid_api_key/)
    expect(body).not.toHaveProperty('result_json')
  })

  it('fails a job whose model this worker does not know, without calling anything', async () => {
    const before = provider.calls.length
    const { url } = await startWorker(undefined, { provider: settings() })
    expect(await dispatch(url, { request: { model: 'not-here', input: 'x' } })).toBe(202)
    await deliveriesReach(1)
    expect(provider.calls.length).toBe(before)
    expect(JSON.parse(deliveries[0]!.rawBody.toString())).toMatchObject({ status: 'failed', error_text: expect.stringContaining('not-here') })
  })
})
