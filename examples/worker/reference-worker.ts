/**
 * The reference external worker (SPEC §5 "Dispatch to external workers" and "Webhook").
 *
 * It accepts the gateway's dispatch POSTs, checks the JWT against the gateway's JWKS (signature,
 * audience, expiry, `body_sha256`, replayed tokens), answers 202 at once, runs the job through the
 * gateway's own provider modules (`src/providers/registry.ts` + `call-provider.ts`), and posts the
 * result to the callback URL as a Standard-Webhooks-signed webhook, echoing `attempt`, only on the
 * configured callback origin, retrying with capped exponential backoff until a 2xx.
 *
 * Run it with `npm run worker` (`tsx examples/worker/reference-worker.ts`); settings come from the
 * environment: WORKER_PORT (4000), WORKER_HOST (127.0.0.1), GATEWAY_JWKS_URL, WORKER_AUDIENCE (the
 * gateway's AI_WORKER_URL), CALLBACK_ORIGIN (the only origin results are posted to),
 * AI_WEBHOOK_SECRET (the first entry signs), and the provider settings the gateway itself reads:
 * AI_PROVIDER (default `echo`), AI_PROVIDER_URL, AI_PROVIDER_API_KEY, AI_MODELS, AI_DEFAULT_MODEL.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleepFor } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import type { JSONWebKeySet } from 'jose'
import { Agent, request } from 'undici'
import { systemClock, type Clock } from '../../src/clock.js'
import { loadConfig } from '../../src/config.js'
import { createDispatchVerifier } from '../../src/dispatch/verify-dispatch.js'
import { toError } from '../../src/errors.js'
import { callProvider } from '../../src/providers/call-provider.js'
import { BreakerOpen, ProviderAborted, ProviderError } from '../../src/providers/errors.js'
import { createProviderRegistry, type ModelConfig, type ProviderName } from '../../src/providers/registry.js'
import { parseWebhookSecrets, signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { jobBackoffMs } from '../../src/worker/backoff.js'

/** The stored request a job was created with (SPEC §4), with the model resolved. */
export interface DispatchedRequest {
  model?: string
  input?: string
  messages?: { role: 'system' | 'user' | 'assistant'; content: string }[]
  params?: { temperature?: number; top_p?: number; max_tokens?: number; stop?: string | string[] }
  [field: string]: unknown
}

export interface JobOutcome {
  output: string
  finish_reason: string
  usage: { input_tokens: number; output_tokens: number }
  provider: string
  model: string
  latency_ms: number
}

/** What the dispatch said about the job, beside its request. */
export interface RunContext {
  jobId: number
  /** The job's stored 64-hex idempotency key (sent on to providers that accept one). */
  idempotencyKey: string
  attempt: number
  requestId: string | undefined
}

/** Runs one job; throws to fail it. `signal` is aborted when the worker shuts down. */
export type RunJob = (request: DispatchedRequest, signal: AbortSignal, context: RunContext) => Promise<JobOutcome>

/** The providers a worker calls: the same settings, with the same meaning, as the gateway's. */
export interface ProviderSettings {
  /** `AI_PROVIDER` (default `echo`). */
  provider?: ProviderName
  /** `AI_PROVIDER_URL` */
  url?: string
  /** `AI_PROVIDER_API_KEY` */
  apiKey?: string
  /** `AI_DEFAULT_MODEL`: used when a request names no model (default `echo` for echo). */
  defaultModel?: string
  /** `AI_MODELS` */
  models?: Record<string, ModelConfig>
  /** Provider calls per job while they fail with retryable errors (default 3, like JOB_MAX_ATTEMPTS). */
  maxRuns?: number
  /**
   * No new call starts after this long since the job began (default 240 s), so the result, or the
   * failure, arrives before the gateway's default AI_WORKER_RESULT_SECONDS (300) runs out.
   */
  deadlineMs?: number
}

export interface ProviderRunner {
  runJob: RunJob
  /** Closes the providers' connection pools. */
  close(): Promise<void>
}

export interface WorkerLogger {
  info(details: object, message: string): void
  warn(details: object, message: string): void
  error(details: object, message: string): void
}

export interface DeliveryRetryOptions {
  /** Deliveries tried at most this many times (default 10). */
  maxTries?: number
  /** First backoff (default 500 ms), doubled on each try… */
  baseDelayMs?: number
  /** …up to this (default 30 s). */
  maxDelayMs?: number
  /** No try starts after this long since the first (default 10 min). */
  maxTotalMs?: number
  /** Per-try bound on the whole exchange (default 10 s). */
  timeoutMs?: number
}

export interface ReferenceWorkerOptions {
  port?: number
  host?: string
  /** The gateway's JWKS URL, or a fixed key set. */
  jwksUrl?: string
  jwks?: JSONWebKeySet
  /** The gateway's `AI_WORKER_URL`: the token's `aud`. */
  audience: string
  /** Results are posted only to a `callback_url` on this origin. */
  callbackOrigin: string
  /** One `AI_WEBHOOK_SECRET` entry (`whsec_…` or raw) that signs the result webhooks. */
  webhookSecret: string
  /** The providers jobs run on (default: `echo`); ignored when `runJob` is given. */
  provider?: ProviderSettings
  /** Replaces the provider runner altogether (tests, or a worker that does something else). */
  runJob?: RunJob
  clock?: Clock
  logger?: WorkerLogger
  retry?: DeliveryRetryOptions
  /** Waits between delivery tries; injectable so tests need no real backoff. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>
  /** Largest dispatch body accepted (default 1 MiB; the gateway's own request cap is 64 KiB). */
  maxBodyBytes?: number
}

export interface ReferenceWorker {
  /** Starts listening; resolves with the base URL. */
  listen(): Promise<string>
  /** Resolves once no job is running and no delivery is pending. */
  idle(): Promise<void>
  /** Stops accepting, lets running work finish for up to `graceMs` (default 0), then aborts it. */
  close(graceMs?: number): Promise<void>
}

interface Dispatch {
  job_id: number
  idempotency_key: string
  attempt: number
  request: DispatchedRequest
  callback_url: string
  request_id: string | undefined
}

type WebhookBody =
  | { job_id: number; idempotency_key: string; status: 'succeeded'; result_json: unknown; usage: { tokens: number; ms: number }; attempt: number }
  | { job_id: number; idempotency_key: string; status: 'failed'; error_text: string; usage: { tokens: number; ms: number }; attempt: number }

const silentLogger: WorkerLogger = { info() {}, warn() {}, error() {} }
const ERROR_TEXT_MAX_CHARS = 2000

const realSleep = (ms: number, signal: AbortSignal) => sleepFor(ms, undefined, { signal })

/**
 * Runs jobs through the gateway's own provider modules: the registry resolves the model to its
 * provider (with one circuit breaker per provider), and `callProvider` makes the call with SPEC §6's
 * retries inside one run. A retryable failure is run again after the job-level backoff, up to
 * `maxRuns` calls; an open breaker is waited out without counting a run; a terminal error fails the
 * job at once with the provider's message (status and code) as `error_text`.
 */
export function createProviderRunner(settings: ProviderSettings = {}, deps: { clock?: Clock; sleep?: (ms: number, signal: AbortSignal) => Promise<void> } = {}): ProviderRunner {
  const clock = deps.clock ?? systemClock
  const sleep = deps.sleep ?? realSleep
  const provider = settings.provider ?? 'echo'
  const defaultModel = settings.defaultModel ?? (provider === 'echo' ? 'echo' : '')
  if (defaultModel === '') throw new Error(`AI_DEFAULT_MODEL is required when AI_PROVIDER is ${provider}`)
  const maxRuns = settings.maxRuns ?? 3
  const deadlineMs = settings.deadlineMs ?? 240_000
  const registry = createProviderRegistry({
    defaultProvider: provider,
    ...(settings.url !== undefined ? { defaultUrl: settings.url } : {}),
    ...(settings.apiKey !== undefined ? { defaultApiKey: settings.apiKey } : {}),
    defaultModel,
    models: settings.models ?? {},
    clock,
  })

  const runJob: RunJob = async (request, signal, context) => {
    const model = typeof request.model === 'string' && request.model !== '' ? request.model : defaultModel
    // The gateway allowed the model; this worker must know it too, or it would call the wrong provider.
    if (!registry.isAllowed(model)) throw new Error(`model "${model}" is not configured on this worker (AI_MODELS, AI_DEFAULT_MODEL)`)
    const resolved = registry.resolve(model)
    const started = clock.now()
    for (let run = 1; ; ) {
      try {
        const call = await callProvider(resolved, {
          model,
          ...(request.input !== undefined ? { input: request.input } : {}),
          ...(request.messages !== undefined ? { messages: request.messages } : {}),
          ...(request.params !== undefined ? { params: request.params } : {}),
          idempotencyKey: context.idempotencyKey,
        }, { clock, signal })
        return {
          output: call.result.output,
          finish_reason: call.result.finish_reason,
          usage: call.result.usage,
          provider: resolved.provider.name,
          model,
          latency_ms: call.providerMs,
        }
      } catch (caught) {
        const err = toError(caught)
        if (err instanceof ProviderAborted || signal.aborted) throw err
        let waitMs: number
        if (err instanceof BreakerOpen) {
          // The provider is known to be down: wait for the breaker without spending a run.
          waitMs = Math.max(1, err.retryAt - clock.now())
        } else if (err instanceof ProviderError && err.retryable && run < maxRuns) {
          waitMs = Math.max(jobBackoffMs(run, clock.random()), err.retryAfterMs ?? 0)
          run++
        } else {
          throw err
        }
        if (clock.now() + waitMs - started > deadlineMs) throw err
        await sleep(waitMs, signal)
      }
    }
  }

  return { runJob, close: () => registry.close() }
}

/** Builds the worker; nothing listens until `listen()`. */
export function createReferenceWorker(options: ReferenceWorkerOptions): ReferenceWorker {
  const clock = options.clock ?? systemClock
  const logger = options.logger ?? silentLogger
  const sleep = options.sleep ?? realSleep
  const runner = options.runJob === undefined ? createProviderRunner(options.provider, { clock, sleep }) : undefined
  const runJob: RunJob = options.runJob ?? runner!.runJob
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024
  const retry = {
    maxTries: options.retry?.maxTries ?? 10,
    baseDelayMs: options.retry?.baseDelayMs ?? 500,
    maxDelayMs: options.retry?.maxDelayMs ?? 30_000,
    maxTotalMs: options.retry?.maxTotalMs ?? 10 * 60_000,
    timeoutMs: options.retry?.timeoutMs ?? 10_000,
  }
  const callbackOrigin = new URL(options.callbackOrigin).origin
  // Fail at construction, not at the first delivery, when the secret cannot sign.
  signStandardWebhook({ secret: options.webhookSecret, id: 'probe', timestampSeconds: 0, body: '' })

  const verifier = createDispatchVerifier({
    ...(options.jwks !== undefined ? { jwks: options.jwks } : { jwksUrl: requireOption(options.jwksUrl, 'jwksUrl') }),
    audience: options.audience,
    clock,
  })
  // Our own connection pool, so close() leaves no keep-alive sockets behind.
  const agent = new Agent({ connect: { timeout: retry.timeoutMs } })
  const shutdown = new AbortController()
  /** Work in flight, keyed by job and attempt so a re-sent dispatch does not run twice. */
  const inFlight = new Map<string, Promise<void>>()
  let accepting = true

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err: toError(err).message }, 'dispatch handler failed')
      if (!res.headersSent) reply(res, 500, { error: 'internal error' })
      else res.destroy()
    })
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method === 'GET' && req.url === '/healthz') return reply(res, 200, { ok: true })
    if (req.method !== 'POST') return reply(res, 405, { error: 'method not allowed' }, { allow: 'POST' })
    if (!accepting) return reply(res, 503, { error: 'shutting down' })

    const rawBody = await readBody(req, maxBodyBytes)
    if (rawBody === undefined) return reply(res, 413, { error: 'body too large' })

    // The token first: nothing about an unauthenticated body is worth parsing.
    const verified = await verifier.verify(req.headers.authorization, rawBody)
    if (!verified.ok) {
      logger.warn({ reason: verified.reason }, 'dispatch refused: bad token')
      return reply(res, 401, { error: 'invalid dispatch token' }, { 'www-authenticate': 'Bearer error="invalid_token"' })
    }

    const dispatch = parseDispatch(rawBody)
    if (typeof dispatch === 'string') return reply(res, 400, { error: dispatch })
    if (dispatch.idempotency_key !== verified.claims.jti) return reply(res, 400, { error: 'idempotency_key differs from the token jti' })
    // SPEC: results go only to the configured callback origin, whatever the body says.
    if (new URL(dispatch.callback_url).origin !== callbackOrigin) {
      logger.warn({ job_id: dispatch.job_id, request_id: dispatch.request_id }, 'dispatch refused: callback_url is not on CALLBACK_ORIGIN')
      return reply(res, 403, { error: 'callback_url origin not allowed' })
    }

    const { claims } = verified
    logger.info({
      job_id: dispatch.job_id, attempt: dispatch.attempt, request_id: dispatch.request_id,
      kid: verified.kid, alg: verified.alg, sub: claims.sub, jti: claims.jti, aud: claims.aud, iat: claims.iat, exp: claims.exp, body_sha256: claims.body_sha256,
    }, 'dispatch verified against the gateway JWKS')

    const key = `${dispatch.idempotency_key}:${dispatch.attempt}`
    if (!inFlight.has(key)) {
      const task = runAndDeliver(dispatch).finally(() => inFlight.delete(key))
      inFlight.set(key, task)
    }
    reply(res, 202, { accepted: true, job_id: dispatch.job_id, attempt: dispatch.attempt })
  }

  async function runAndDeliver(dispatch: Dispatch): Promise<void> {
    const log = { job_id: dispatch.job_id, attempt: dispatch.attempt, request_id: dispatch.request_id }
    const started = clock.now()
    let body: WebhookBody
    try {
      const outcome = await runJob(dispatch.request, shutdown.signal, {
        jobId: dispatch.job_id, idempotencyKey: dispatch.idempotency_key, attempt: dispatch.attempt, requestId: dispatch.request_id,
      })
      body = {
        job_id: dispatch.job_id,
        idempotency_key: dispatch.idempotency_key,
        status: 'succeeded',
        // The same result shape as a job run inside the gateway.
        result_json: {
          output: outcome.output,
          finish_reason: outcome.finish_reason,
          provider: outcome.provider,
          model: outcome.model,
          usage: outcome.usage,
          latency_ms: outcome.latency_ms,
        },
        // SPEC §4: the webhook's usage.tokens is output tokens, usage.ms is provider time.
        usage: { tokens: outcome.usage.output_tokens, ms: outcome.latency_ms },
        attempt: dispatch.attempt,
      }
    } catch (err) {
      if (shutdown.signal.aborted) {
        // Not the job's fault: the gateway's lease will expire and it will dispatch again.
        logger.warn(log, 'job abandoned at shutdown')
        return
      }
      body = {
        job_id: dispatch.job_id,
        idempotency_key: dispatch.idempotency_key,
        status: 'failed',
        error_text: toError(err).message.slice(0, ERROR_TEXT_MAX_CHARS) || 'job failed',
        usage: { tokens: 0, ms: clock.now() - started },
        attempt: dispatch.attempt,
      }
    }
    await deliver(dispatch.callback_url, body, log)
  }

  async function deliver(url: string, body: WebhookBody, log: object): Promise<void> {
    const payload = Buffer.from(JSON.stringify(body), 'utf8')
    // One id for every try of this message: the gateway's replay guard recognises a re-delivery.
    const id = `msg_${randomUUID()}`
    const firstTryMs = clock.now()
    for (let tryNumber = 1; ; tryNumber++) {
      let delayMs = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (tryNumber - 1))
      try {
        // Signed afresh on each try: the gateway allows only 120 s of drift.
        const headers = signStandardWebhook({ secret: options.webhookSecret, id, timestampSeconds: Math.floor(clock.now() / 1000), body: payload })
        const res = await request(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: payload,
          dispatcher: agent,
          signal: AbortSignal.any([shutdown.signal, AbortSignal.timeout(retry.timeoutMs)]),
        })
        await res.body.dump()
        if (res.statusCode >= 200 && res.statusCode < 300) {
          logger.info({ ...log, status: res.statusCode, tries: tryNumber }, 'result delivered')
          return
        }
        // Any other answer is retried, as Standard Webhooks senders do: a refusal may come from a
        // proxy, an allowlist or a secret being rotated, and clear up; the schedule is bounded.
        const retryAfterMs = parseRetryAfter(res.headers['retry-after'], clock.now())
        if (retryAfterMs !== undefined) delayMs = Math.min(retry.maxDelayMs, Math.max(delayMs, retryAfterMs))
        logger.warn({ ...log, status: res.statusCode, tries: tryNumber }, 'result delivery not acknowledged; will retry')
      } catch (err) {
        if (shutdown.signal.aborted) break
        logger.warn({ ...log, err: toError(err).message, tries: tryNumber }, 'result delivery failed; will retry')
      }
      // Equal jitter: spreads retries from many jobs while keeping at least half the backoff.
      delayMs = Math.round(delayMs / 2 + (delayMs / 2) * clock.random())
      if (tryNumber >= retry.maxTries || clock.now() + delayMs - firstTryMs > retry.maxTotalMs) break
      try {
        await sleep(delayMs, shutdown.signal)
      } catch {
        break
      }
    }
    logger.error(log, 'result not delivered; the gateway will dispatch the job again when its lease expires')
  }

  return {
    listen() {
      return new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(options.port ?? 4000, options.host ?? '127.0.0.1', () => {
          server.off('error', reject)
          const { address, port } = server.address() as AddressInfo
          const host = address.includes(':') ? `[${address}]` : address
          resolve(`http://${host}:${port}`)
        })
      })
    },
    async idle() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight.values()])
    },
    async close(graceMs = 0) {
      accepting = false
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeIdleConnections()
      if (graceMs > 0 && inFlight.size > 0) {
        await Promise.race([Promise.allSettled([...inFlight.values()]), sleepFor(graceMs)])
      }
      shutdown.abort()
      await Promise.allSettled([...inFlight.values()])
      server.closeAllConnections()
      await closed
      await agent.close()
      await runner?.close()
    },
  }
}

function parseDispatch(rawBody: Buffer): Dispatch | string {
  let body: unknown
  try {
    body = JSON.parse(rawBody.toString('utf8'))
  } catch {
    return 'body is not JSON'
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'body is not an object'
  const b = body as Record<string, unknown>
  if (!Number.isSafeInteger(b.job_id) || (b.job_id as number) < 1) return 'job_id must be a positive integer'
  if (typeof b.idempotency_key !== 'string' || b.idempotency_key === '') return 'idempotency_key must be a string'
  if (!Number.isSafeInteger(b.attempt) || (b.attempt as number) < 1) return 'attempt must be a positive integer'
  if (typeof b.request !== 'object' || b.request === null || Array.isArray(b.request)) return 'request must be an object'
  if (typeof b.callback_url !== 'string' || !URL.canParse(b.callback_url)) return 'callback_url must be an absolute URL'
  const protocol = new URL(b.callback_url).protocol
  if (protocol !== 'http:' && protocol !== 'https:') return 'callback_url must be http or https'
  if (b.request_id !== undefined && typeof b.request_id !== 'string') return 'request_id must be a string'
  return {
    job_id: b.job_id as number,
    idempotency_key: b.idempotency_key,
    attempt: b.attempt as number,
    request: b.request as DispatchedRequest,
    callback_url: b.callback_url,
    request_id: b.request_id,
  }
}

/** The body, or undefined once it exceeds `limit` bytes. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limit) return undefined
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

function reply(res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

function parseRetryAfter(value: string | string[] | undefined, nowMs: number): number | undefined {
  if (typeof value !== 'string') return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs)
}

function requireOption(value: string | undefined, name: string): string {
  if (value === undefined || value === '') throw new Error(`reference worker: ${name} is required`)
  return value
}

/** Reads the script's settings; a bad one ends the process with a line naming the variable. */
function optionsFromEnv(env: NodeJS.ProcessEnv): ReferenceWorkerOptions {
  const required = (name: string): string => {
    const value = env[name]?.trim()
    if (!value) throw new Error(`${name} is required`)
    return value
  }
  const url = (name: string): string => {
    const value = required(name)
    if (!URL.canParse(value)) throw new Error(`${name} must be an absolute URL`)
    return value
  }
  const portText = env.WORKER_PORT?.trim() || '4000'
  const port = Number(portText)
  if (!/^\d+$/.test(portText) || port > 65535) throw new Error('WORKER_PORT must be a port number (0–65535)')
  // The provider settings are read and checked exactly as the gateway reads them.
  const providerEnv: Record<string, string | undefined> = {}
  for (const name of ['AI_PROVIDER', 'AI_PROVIDER_URL', 'AI_PROVIDER_API_KEY', 'AI_MODELS', 'AI_DEFAULT_MODEL']) providerEnv[name] = env[name]?.trim()
  const config = loadConfig(providerEnv)
  const provider: ProviderSettings = {
    provider: config.provider,
    ...(config.providerUrl !== undefined ? { url: config.providerUrl } : {}),
    ...(config.providerApiKey !== undefined ? { apiKey: config.providerApiKey } : {}),
    defaultModel: config.defaultModel,
    models: config.models,
  }
  const jwksUrl = url('GATEWAY_JWKS_URL')
  const audience = url('WORKER_AUDIENCE')
  const callbackOrigin = new URL(url('CALLBACK_ORIGIN')).origin
  const secret = parseWebhookSecrets(required('AI_WEBHOOK_SECRET'))[0]
  if (secret === undefined) throw new Error('AI_WEBHOOK_SECRET is required')
  return { port, host: env.WORKER_HOST?.trim() || '127.0.0.1', jwksUrl, audience, callbackOrigin, webhookSecret: secret, provider }
}

async function main(): Promise<void> {
  const { pino } = await import('pino')
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'info', name: 'reference-worker' })
  let options: ReferenceWorkerOptions
  try {
    options = optionsFromEnv(process.env)
  } catch (err) {
    process.stderr.write(`reference-worker: ${toError(err).message}\n`)
    process.exit(1)
  }
  const worker = createReferenceWorker({ ...options, logger })
  const url = await worker.listen()
  logger.info({
    url, audience: options.audience, callbackOrigin: options.callbackOrigin,
    provider: options.provider?.provider, defaultModel: options.provider?.defaultModel,
  }, 'reference worker listening')
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'stopping: finishing running jobs for up to 10 s')
    worker.close(10_000).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: toError(err).message }, 'close failed')
        process.exit(1)
      },
    )
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`reference-worker: ${toError(err).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
