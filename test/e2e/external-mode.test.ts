import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { dropMysqlDatabase, freshMysqlDatabase, signToken, TOKEN_SECRET, waitFor } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { chatCompletion, promptOf, startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { freePort } from '../support/gateway-process.js'

/**
 * External mode end to end, every part a real process or server on loopback:
 *   test ──POST /jobs──▶ gateway (node --import tsx src/server.ts, MariaDB)
 *   gateway ──dispatch + JWT──▶ recording proxy (in the test) ──▶ reference worker (tsx process)
 *   worker ──chat/completions──▶ fake OpenAI-compatible provider (in the test)
 *   worker ──Standard-Webhooks-signed result──▶ gateway /webhook
 * The proxy keeps the exact Authorization header and body bytes the gateway sent, so the test can
 * check the JWT against the gateway's own JWKS route.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DB = `gw_t5_e2e_${RUN}`
const KID = 'e2e-key-1'
const WEBHOOK_SECRET = `whsec_${randomBytes(32).toString('base64')}`
const MODEL = 'gpt-e2e'

interface Captured {
  url: string
  headers: IncomingHttpHeaders
  raw: Buffer
  status: number
}

interface Proc {
  child: ChildProcess
  output: string[]
  exited: Promise<void>
}

const procs: Proc[] = []

function start(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const output: string[] = []
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') output.push(line)
  }
  child.stdout!.on('data', collect)
  child.stderr!.on('data', collect)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const proc = { child, output, exited }
  procs.push(proc)
  return proc
}

async function stopAll(): Promise<void> {
  await Promise.all(procs.splice(0).map(async (p) => {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return
    p.child.kill('SIGTERM')
    const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000)
    await p.exited
    clearTimeout(timer)
  }))
}

process.on('exit', () => {
  for (const p of procs) p.child.kill('SIGKILL')
})

const tail = (p: Proc) => p.output.slice(-40).join('\n')

let fake: FakeProvider
let proxy: Server
let proxyUrl: string
let workerBase = ''
const captured: Captured[] = []
let gatewayPort: number
let gatewayOrigin: string
let gateway: Proc
let worker: Proc

beforeAll(async () => {
  fake = await startFakeProvider((call) => ({ json: chatCompletion(`provider says: ${promptOf(call)}`, { prompt_tokens: 6, completion_tokens: 4 }), delayMs: 20 }))

  // The recording proxy: AI_WORKER_URL points here; it forwards to the worker once that is up.
  proxy = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks)
      const entry: Captured = { url: req.url ?? '', headers: req.headers, raw, status: 0 }
      captured.push(entry)
      if (!workerBase) {
        entry.status = 503
        res.writeHead(503)
        res.end()
        return
      }
      const headers: Record<string, string> = {}
      for (const name of ['authorization', 'content-type', 'x-request-id']) {
        const v = req.headers[name]
        if (typeof v === 'string') headers[name] = v
      }
      request(`${workerBase}${req.url ?? '/'}`, { method: 'POST', headers, body: raw }).then(async (answer) => {
        const text = await answer.body.text()
        entry.status = answer.statusCode
        res.writeHead(answer.statusCode, { 'content-type': 'application/json' })
        res.end(text)
      }, () => {
        entry.status = 502
        res.writeHead(502)
        res.end()
      })
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/dispatch`

  const databaseUrl = await freshMysqlDatabase(DB)
  gatewayPort = await freePort()
  gatewayOrigin = `http://127.0.0.1:${gatewayPort}`
  const privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()

  gateway = start(['--import', 'tsx', 'src/server.ts'], {
    HOST: '127.0.0.1',
    PORT: String(gatewayPort),
    DATABASE_URL: databaseUrl,
    PUBLIC_URL: gatewayOrigin,
    AI_WORKER_URL: proxyUrl,
    AI_WEBHOOK_SECRET: WEBHOOK_SECRET,
    AI_JWT_PRIVATE_KEY: privateKey,
    AI_JWT_KID: KID,
    AI_PUBLIC_TOKEN_SECRET: TOKEN_SECRET,
    // The gateway must allow the model; in external mode it never calls this provider itself.
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('gateway'),
    AI_DEFAULT_MODEL: MODEL,
    LOG_LEVEL: 'warn',
  })
  await waitFor(async () => {
    if (gateway.child.exitCode !== null) throw new Error(`the gateway exited during start-up:\n${tail(gateway)}`)
    try {
      const res = await fetch(`${gatewayOrigin}/healthz`, { signal: AbortSignal.timeout(1_000) })
      return res.ok ? true : undefined
    } catch {
      return undefined
    }
  }, 45_000, 'the gateway to answer /healthz').catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${tail(gateway)}`)
  })

  // The reference worker, run the way `npm run worker` runs it (the tsx CLI).
  worker = start([`${ROOT}node_modules/tsx/dist/cli.mjs`, 'examples/worker/reference-worker.ts'], {
    WORKER_PORT: '0',
    WORKER_HOST: '127.0.0.1',
    GATEWAY_JWKS_URL: `${gatewayOrigin}/wp-json/ai/v1/.well-known/jwks.json`,
    WORKER_AUDIENCE: proxyUrl,
    CALLBACK_ORIGIN: gatewayOrigin,
    AI_WEBHOOK_SECRET: WEBHOOK_SECRET,
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('worker'),
    AI_PROVIDER_API_KEY: 'sk-e2e-worker',
    AI_DEFAULT_MODEL: MODEL,
    LOG_LEVEL: 'info',
  })
  workerBase = await waitFor(() => {
    if (worker.child.exitCode !== null) throw new Error(`the worker exited during start-up:\n${tail(worker)}`)
    for (const line of worker.output) {
      try {
        const entry = JSON.parse(line) as { msg?: string; url?: string }
        if (entry.msg === 'reference worker listening' && entry.url) return entry.url
      } catch {
        // not a log line
      }
    }
    return undefined
  }, 45_000, 'the reference worker to listen').catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${tail(worker)}`)
  })
}, 120_000)

afterAll(async () => {
  await stopAll()
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()))
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('external mode, end to end', () => {
  it('a job created over HTTP is dispatched with a JWKS-verifiable JWT, run by the reference worker on the provider, and succeeds by webhook', async () => {
    const token = await signToken({ sub: '42' })
    const created = await fetch(`${gatewayOrigin}/wp-json/ai/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'x-request-id': 'e2e-request-1' },
      body: JSON.stringify({ input: 'Hello from the e2e test' }),
    })
    expect(created.status).toBe(202)
    const { job_id: id } = (await created.json()) as { job_id: number }

    const job = await waitFor(async () => {
      const res = await fetch(`${gatewayOrigin}/wp-json/ai/v1/jobs/${id}`, { headers: { authorization: `Bearer ${token}` } })
      const body = (await res.json()) as { status: string }
      if (body.status === 'failed' || body.status === 'canceled') throw new Error(`job ended ${JSON.stringify(body)}\ngateway:\n${tail(gateway)}\nworker:\n${tail(worker)}`)
      return body.status === 'succeeded' ? (body as Record<string, any>) : undefined
    }, 30_000, 'the job to succeed').catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\ngateway:\n${tail(gateway)}\nworker:\n${tail(worker)}`)
    })

    // The provider's output, through the worker and the webhook.
    expect(job).toMatchObject({
      job_id: id,
      status: 'succeeded',
      model: MODEL,
      attempts: 1,
      error: null,
      request_id: 'e2e-request-1',
      result: { output: 'provider says: Hello from the e2e test', finish_reason: 'stop', provider: 'openai', model: MODEL, usage: { input_tokens: 6, output_tokens: 4 } },
      usage: { output_tokens: 4, provider_ms: expect.any(Number), worker_ms: expect.any(Number) },
    })

    // Exactly one provider call, made by the worker (never by the gateway), with the job's key.
    expect(fake.callsTo('gateway')).toHaveLength(0)
    const calls = fake.callsTo('worker')
    expect(calls).toHaveLength(1)
    expect(calls[0]!.headers.authorization).toBe('Bearer sk-e2e-worker')

    // The dispatch as the gateway sent it.
    const accepted = captured.filter((c) => c.status >= 200 && c.status < 300)
    expect(accepted).toHaveLength(1)
    const dispatch = accepted[0]!
    const body = JSON.parse(dispatch.raw.toString('utf8'))
    expect(body).toEqual({
      job_id: id,
      idempotency_key: expect.stringMatching(/^[0-9a-f]{64}$/),
      attempt: 1,
      request: expect.objectContaining({ model: MODEL, input: 'Hello from the e2e test' }),
      callback_url: `${gatewayOrigin}/wp-json/ai/v1/webhook`,
      request_id: 'e2e-request-1',
    })
    expect(calls[0]!.key).toBe(body.idempotency_key)

    const jwt = String(dispatch.headers.authorization).replace(/^Bearer /, '')
    expect(decodeProtectedHeader(jwt)).toMatchObject({ alg: 'ES256', kid: KID })
    const jwks = (await (await fetch(`${gatewayOrigin}/wp-json/ai/v1/.well-known/jwks.json`)).json()) as JSONWebKeySet
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(jwks), { audience: proxyUrl, algorithms: ['ES256'], clockTolerance: 5 })
    expect(payload).toMatchObject({ sub: '42', jti: body.idempotency_key, aud: proxyUrl, body_sha256: createHash('sha256').update(dispatch.raw).digest('hex') })
    expect(payload.exp! - payload.iat!).toBeLessThanOrEqual(60)

    // The worker verified the same token against the gateway's JWKS, and said so.
    const verified = worker.output.map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>
      } catch {
        return undefined
      }
    }).find((entry) => entry?.msg === 'dispatch verified against the gateway JWKS')
    expect(verified).toMatchObject({ job_id: id, attempt: 1, kid: KID, alg: 'ES256', sub: '42', jti: body.idempotency_key, aud: proxyUrl })
  })
})
