import type { ServerResponse } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/clock.js'
import { createProviderRegistry, type ProviderRegistry } from '../../src/providers/registry.js'
import { RETRY_DEFAULTS } from '../../src/providers/retry.js'
import { createProviderExecutor } from '../../src/worker/provider-executor.js'
import { buildTestApp, bearer, type TestApp } from '../helpers.js'
import { startFakeServer, type FakeServer } from '../providers/fake-server.js'
import { chatCompletion } from '../support/fake-provider.js'
import { TestPool } from '../support/pool.js'
import { RUN } from '../support/run-tag.js'
import { checkEndState, waitUntilTerminal, type ProviderSpan } from './end-state.js'

/**
 * Providers that hang (accept, never answer) or dribble their answer byte by byte (SPEC §6:
 * timeouts are retryable: retried within the attempt with backoff, then the job is retried up to
 * JOB_MAX_ATTEMPTS, then `failed`). Each behaviour is its own endpoint, so each has its own
 * circuit breaker.
 *
 * The provider timeouts are not configurable by environment: the providers plugin builds its
 * registry with DEFAULT_TIMEOUTS (60 s for the headers, 120 s idle in the body). So the pool here
 * is composed as the pool plugin composes it (test/support/pool.ts: decision writer, lease
 * keeper, reaper), on the app's database, with the real provider executor and a registry given
 * short timeouts through its own `timeouts` option.
 */
const TIMEOUTS = { headersMs: 1_500, bodyMs: 500 }
const MAX_ATTEMPTS = 2
const DRIBBLE_GAP_MS = 10

type Mode = 'ok' | 'hang' | 'hang-once' | 'dribble' | 'stall' | 'stall-once'
const MODES: Mode[] = ['ok', 'hang', 'hang-once', 'dribble', 'stall', 'stall-once']

let server: FakeServer
let t: TestApp
let registry: ProviderRegistry
let pool: TestPool | undefined
const spans: ProviderSpan[] = []
const held = new Set<ServerResponse>()

function promptOf(body: unknown): string {
  const messages = (body as { messages?: { role: string; content: string }[] } | null)?.messages ?? []
  return messages.filter((m) => m.role === 'user').map((m) => m.content).join('\n')
}

beforeAll(async () => {
  const seen = new Map<string, number>()
  server = await startFakeServer((request, res) => {
    const mode = (request.path.split('/')[1] ?? '') as Mode
    const keyHeader = request.headers['idempotency-key']
    const key = typeof keyHeader === 'string' ? keyHeader : ''
    const nth = (seen.get(`${mode}|${key}`) ?? 0) + 1
    seen.set(`${mode}|${key}`, nth)
    const span: ProviderSpan = { key, start: performance.now(), end: undefined, answered: false }
    spans.push(span)
    res.on('close', () => {
      span.end ??= performance.now()
      held.delete(res)
    })
    const body = Buffer.from(JSON.stringify(chatCompletion(`done: ${promptOf(request.body)}`)))
    const answer = (rest: Buffer) => {
      span.end = performance.now()
      span.answered = true
      res.end(rest)
    }
    const first = nth === 1
    if (mode === 'hang' || (mode === 'hang-once' && first)) {
      // Accepted, never answered.
      held.add(res)
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length) })
    if (mode === 'stall' || (mode === 'stall-once' && first)) {
      // Half the answer, then silence.
      held.add(res)
      res.write(body.subarray(0, body.length >> 1))
      return
    }
    if (mode === 'dribble') {
      let at = 0
      const next = () => {
        if (res.destroyed) return
        if (at === body.length - 1) return answer(body.subarray(at))
        res.write(body.subarray(at, at + 1))
        at++
        setTimeout(next, DRIBBLE_GAP_MS)
      }
      res.flushHeaders()
      next()
      return
    }
    answer(body)
  })

  const models = Object.fromEntries(MODES.map((mode) => [mode, { provider: 'openai', url: `${server.url}/${mode}/v1` }]))
  t = await buildTestApp({
    dialect: 'sqlite',
    name: `gw_chaos_stalled_${RUN}`,
    env: {
      AI_PROVIDER: 'openai', AI_PROVIDER_URL: `${server.url}/ok/v1`, AI_DEFAULT_MODEL: 'ok', AI_MODELS: JSON.stringify(models),
      JOB_MAX_ATTEMPTS: String(MAX_ATTEMPTS), RATE_LIMIT_MAX: '0', DEDUPE_WINDOW_SECONDS: '0',
    },
  })
  const { config } = t
  registry = createProviderRegistry({
    defaultProvider: config.provider,
    defaultUrl: config.providerUrl!,
    defaultModel: config.defaultModel,
    models: config.models,
    clock: systemClock,
    timeouts: TIMEOUTS,
  })
  pool = new TestPool({
    handle: t.app.db,
    clock: systemClock,
    execute: createProviderExecutor({ registry, clock: systemClock, resultMaxBytes: config.resultMaxBytes, defaultModel: config.defaultModel, encryptionKeys: undefined }),
    concurrency: 8,
    leaseMs: config.jobLeaseSeconds * 1000,
    maxAttempts: config.jobMaxAttempts,
    pollMs: 100,
    reapEveryMs: 500,
  })
}, 60_000)

afterAll(async () => {
  await pool?.stop(0)
  await registry?.close()
  for (const res of held) res.destroy()
  await server?.close()
  await t?.close()
})

describe('a provider that hangs, and one that dribbles', () => {
  it('times out, retries per SPEC §6, fails once attempts are spent, and assembles a slow answer whole', async () => {
    const headers = await bearer({ sub: '61' })
    const jobs: Array<{ id: number; mode: Mode; input: string }> = []
    const plan: Array<[Mode, number]> = [['ok', 2], ['hang', 1], ['hang-once', 2], ['dribble', 2], ['stall', 1], ['stall-once', 2]]
    for (const [mode, count] of plan) {
      for (let n = 0; n < count; n++) {
        const input = `${mode} job ${n}`
        const res = await t.app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers, payload: { model: mode, input } })
        expect(res.statusCode, res.body).toBe(202)
        jobs.push({ id: (res.json() as { job_id: number }).job_id, mode, input })
      }
    }
    pool!.start()
    await waitUntilTerminal(t.app.db, jobs.map((j) => j.id), 40_000)
    const rows = await checkEndState(t.app.db, { accepted: jobs.map((j) => j.id), spans, triesPerAttempt: RETRY_DEFAULTS.maxWithinAttempt, exact: true })

    for (const job of jobs) {
      const row = rows.find((r) => Number(r.id) === job.id)!
      const calls = spans.filter((s) => s.key === row.idempotency_key)
      const where = `${job.mode} job ${job.id}`
      if (job.mode === 'hang' || job.mode === 'stall') {
        // Every try timed out: retried within the attempt, then as a new attempt, then failed.
        expect(row.status, where).toBe('failed')
        expect(Number(row.attempts), where).toBe(MAX_ATTEMPTS)
        expect(row.error_text, where).toMatch(job.mode === 'hang' ? /UND_ERR_HEADERS_TIMEOUT/ : /UND_ERR_BODY_TIMEOUT/)
        expect(row.error_text, where).toMatch(new RegExp(`gave up after ${MAX_ATTEMPTS} attempts`))
        expect(calls.length, where).toBeGreaterThan(MAX_ATTEMPTS)
        // The gateway closed every call it gave up on: no connection is left hanging.
        expect(calls.every((c) => !c.answered && c.end !== undefined), where).toBe(true)
      } else {
        expect(row.status, where).toBe('succeeded')
        expect(JSON.parse(row.result_json!).output, where).toBe(`done: ${job.input}`)
        if (job.mode.endsWith('-once')) {
          // The first try timed out and was retried within the same attempt.
          expect(Number(row.attempts), where).toBe(1)
          expect(calls.length, where).toBeGreaterThanOrEqual(2)
          expect(calls[0]!.answered, where).toBe(false)
        }
      }
    }
    expect(held.size, 'hung calls still open at the provider').toBe(0)
    console.info(`stalled providers: ${jobs.map((j) => {
      const row = rows.find((r) => Number(r.id) === j.id)!
      return `${j.mode} ${row.status} after ${row.attempts} attempt(s), ${spans.filter((c) => c.key === row.idempotency_key).length} call(s)`
    }).join('; ')}`)
  }, 60_000)
})
