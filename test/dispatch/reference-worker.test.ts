import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createReferenceWorker, type ReferenceWorker, type RunJob } from '../../examples/worker/reference-worker.js'
import { bodySha256, buildJwks, generateDevSigningKey, signDispatchJwt, type DispatchSigningKey } from '../../src/dispatch/jwt.js'
import { verifyWebhookSignature } from '../../src/webhook/verify-signature.js'

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

async function startWorker(runJob?: RunJob): Promise<{ url: string; worker: ReferenceWorker }> {
  const worker = createReferenceWorker({
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
}

async function dispatch(workerUrl: string, overrides: DispatchOverrides = {}) {
  const idempotencyKey = 'c'.repeat(64)
  const body = Buffer.from(
    JSON.stringify({
      job_id: 17,
      idempotency_key: idempotencyKey,
      attempt: overrides.attempt ?? 1,
      request: { model: 'echo', input: 'hello from the test' },
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
  const res = await request(`${workerUrl}/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: overrides.authorization ?? `Bearer ${token}` },
    body,
  })
  await res.body.dump()
  return res.statusCode
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
      result_json: {
        output: 'hello from the test',
        finish_reason: 'stop',
        provider: 'echo',
        model: 'echo',
        usage: { input_tokens: 4, output_tokens: 4 },
      },
      usage: { tokens: 4, ms: 0 },
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

  it('stops retrying on a 4xx refusal other than 408 and 429', async () => {
    webhookAnswers = [403]
    const { url, worker } = await startWorker()
    expect(await dispatch(url)).toBe(202)
    await deliveriesReach(1)
    await worker.idle()
    expect(deliveries).toHaveLength(1)
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
