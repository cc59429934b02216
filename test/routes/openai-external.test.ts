/**
 * The OpenAI-compatible endpoint in external mode (SPEC §11): the call waits for the worker's
 * signed webhook, and a streamed call gets the output as one chunk. The worker is a real HTTP
 * server on loopback that accepts the dispatch and then posts the webhook, as workers do.
 */
import { generateKeyPairSync } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { signXAiSignature } from '../../src/webhook/verify-signature.js'
import { freshDatabase, signToken, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const SECRET = 'external-openai-webhook-secret'

describe('the OpenAI-compatible endpoint in external mode (SQLite)', () => {
  let app: FastifyInstance
  let worker: Server
  let cleanup: () => Promise<void>
  let gatewayOrigin = ''
  const dispatched: { job_id: number; request: any }[] = []

  beforeAll(async () => {
    // Accepts each dispatch, then answers it through the webhook with the prompt upper-cased.
    worker = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
        dispatched.push(body)
        res.writeHead(202).end()
        const prompt = (body.request.messages as { content: string }[]).at(-1)!.content
        const payload = JSON.stringify({
          job_id: body.job_id, idempotency_key: body.idempotency_key, status: 'succeeded', attempt: body.attempt,
          result_json: { output: prompt.toUpperCase(), finish_reason: 'stop', model: 'worker-model' }, usage: { tokens: 4, ms: 12 },
        })
        setTimeout(() => {
          void fetch(`${gatewayOrigin}${BASE}/webhook`, {
            method: 'POST', body: payload,
            headers: { 'content-type': 'application/json', 'x-ai-signature': signXAiSignature(SECRET, payload), 'x-ai-timestamp': String(Math.floor(Date.now() / 1000)) },
          })
        }, 30)
      })
    })
    await new Promise<void>((resolve) => worker.listen(0, '127.0.0.1', resolve))
    const db = await freshDatabase('sqlite', `gw_openai_external_${RUN}`)
    cleanup = db.cleanup
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    app = await buildApp(testConfig({
      DATABASE_URL: db.url, RATE_LIMIT_MAX: '0', PUBLIC_URL: 'http://127.0.0.1:9',
      AI_WORKER_URL: `http://127.0.0.1:${(worker.address() as AddressInfo).port}/jobs`, AI_WEBHOOK_SECRET: SECRET, AI_JWT_PRIVATE_KEY: key, AI_JWT_KID: 'k1',
    }), { logger: false })
    await app.listen({ port: 0, host: '127.0.0.1' })
    gatewayOrigin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    await app?.close()
    await new Promise((resolve) => worker?.close(resolve))
    await cleanup?.()
  })

  it('waits for the webhook and answers its result', async () => {
    const client = new OpenAI({ apiKey: await signToken({ sub: '31' }), baseURL: `${gatewayOrigin}${BASE}/openai`, maxRetries: 0 })
    const completion = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'from afar' }] })
    expect(completion.choices[0]!.message.content).toBe('FROM AFAR')
    expect(completion.model).toBe('worker-model')
    expect(completion.usage?.completion_tokens).toBe(4)
    expect(dispatched.map((d) => d.job_id)).toContain(Number(completion.id.replace('chatcmpl-', '')))
  })

  it('a streamed call gets the output as one chunk, then [DONE]', async () => {
    const client = new OpenAI({ apiKey: await signToken({ sub: '32' }), baseURL: `${gatewayOrigin}${BASE}/openai`, maxRetries: 0 })
    const stream = await client.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'streamed from afar' }], stream: true })
    const texts: string[] = []
    let finish: string | null = null
    for await (const c of stream) {
      const text = c.choices[0]?.delta.content
      if (text) texts.push(text)
      finish = c.choices[0]?.finish_reason ?? finish
    }
    expect(texts).toEqual(['STREAMED FROM AFAR'])
    expect(finish).toBe('stop')
  })
})
