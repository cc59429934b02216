import { pino } from 'pino'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { JobDecision } from '../../src/jobs/apply-decision.js'
import type { JobExecutor } from '../../src/worker/pool.js'
import { createProviderExecutor } from '../../src/worker/provider-executor.js'
import { bearer, buildTestApp, DIALECTS, waitFor, type TestApp } from '../helpers.js'
import { startFakeServer, type FakeServer } from '../providers/fake-server.js'
import { closedBy, openAiStream, throughEventWith, writeInPieces } from '../providers/streams.js'
import { TestPool } from '../support/pool.js'
import { RUN } from '../support/run-tag.js'
import { BASE, createJob, offsetClock, QUIET_ENV, resultOf, row } from '../support/worker-app.js'

/**
 * Jobs through a real pool and the provider executor with a delta sink, as the gateway wires it
 * to SSE: what the sink receives is checked against what the job row stores.
 */
type Event = { kind: 'delta'; index: number; text: string } | { kind: 'reset' }

/** The text a client holds at the end: the deltas after the last reset, in index order. */
function clientText(events: Event[]): string {
  const last = events.map((e) => e.kind).lastIndexOf('reset')
  const deltas = events.slice(last + 1).filter((e): e is Extract<Event, { kind: 'delta' }> => e.kind === 'delta')
  deltas.forEach((d, i) => expect(d.index).toBe(i))
  return deltas.map((d) => d.text).join('')
}

describe.each(DIALECTS)('streaming jobs through the pool (%s)', (dialect) => {
  const clock = offsetClock()
  let t: TestApp
  let pool: TestPool
  let remote: FakeServer
  let remoteClosed: Promise<void> | undefined
  let auth: Record<string, string>
  const events = new Map<number, Event[]>()
  const decisions = new Map<number, JobDecision[]>()

  beforeAll(async () => {
    remote = await startFakeServer((seen, res, req) => {
      if (seen.path.startsWith('/no-usage/')) return void writeInPieces(res, [openAiStream(['told', ' nothing'], { usage: null })])
      remoteClosed = closedBy(req)
      void writeInPieces(res, [throughEventWith(openAiStream(['never', ' finished']), '"never"')], 'hold')
    })
    t = await buildTestApp({
      dialect,
      name: `gw_stream_exec_${dialect}_${RUN}`,
      clock,
      env: {
        ...QUIET_ENV,
        JOB_MAX_ATTEMPTS: '3',
        AI_MODELS: JSON.stringify({
          streamer: { provider: 'echo', delta_ms: 1 },
          crawler: { provider: 'echo', delta_ms: 600_000 },
          'breaks-once': { provider: 'echo', break_after: 2, fail_times: 1 },
          'breaks-thrice': { provider: 'echo', break_after: 1, fail_times: 3 },
          down: { provider: 'echo', fail_status: 503, fallback: ['streamer'] },
          remote: { provider: 'openai', url: `${remote.url}/hold/v1` },
          quiet: { provider: 'openai', url: `${remote.url}/no-usage/v1` },
        }),
      },
    })
    const executor = createProviderExecutor({
      registry: t.app.providers, clock, resultMaxBytes: t.config.resultMaxBytes, encryptionKeys: undefined, defaultModel: t.config.defaultModel,
      onDelta: (jobId, index, text) => events.get(jobId)?.push({ kind: 'delta', index, text }),
      onReset: (jobId) => events.get(jobId)?.push({ kind: 'reset' }),
    })
    const execute: JobExecutor = async (r, signal, reason) => {
      const decision = await executor(r, signal, reason)
      decisions.get(r.id)?.push(decision)
      return decision
    }
    pool = new TestPool({ handle: t.app.db, clock, logger: pino({ level: 'silent' }), execute, concurrency: 4, leaseMs: 60_000, maxAttempts: 3 })
    auth = await bearer({ sub: '7' })
  }, 60_000)

  afterAll(async () => {
    await pool?.stop(0)
    await t?.close()
    await remote?.close()
  })

  beforeEach(() => {
    expect(pool.isRunning).toBe(false)
  })

  async function job(body: Record<string, unknown>): Promise<number> {
    const id = await createJob(t.app, auth, body)
    events.set(id, [])
    decisions.set(id, [])
    return id
  }

  it('streams an echo job word by word; the deltas join to the stored output, with the usage on the decision', async () => {
    const id = await job({ model: 'streamer', input: 'a streamed answer, word by word' })
    expect(await pool.runOnce()).toBe(1)
    const r = await row(t.app, id)
    expect(r.status).toBe('succeeded')
    const result = resultOf(r)!
    expect(result).toMatchObject({ output: 'a streamed answer, word by word', provider: 'echo', model: 'streamer', usage: { input_tokens: 8, output_tokens: 8 } })
    expect(events.get(id)).toEqual(['a ', 'streamed ', 'answer, ', 'word ', 'by ', 'word'].map((text, index) => ({ kind: 'delta', index, text })))
    expect(clientText(events.get(id)!)).toBe(result.output)
    expect(decisions.get(id)).toEqual([expect.objectContaining({
      kind: 'finish',
      usage: { calls: [{ model: 'streamer', input_tokens: 8, output_tokens: 8, reported: true }], unmetered: 0 },
    })])
    expect([r.input_tokens, r.output_tokens]).toEqual([8, 8])
  })

  it('a stream that breaks is retried within the attempt: a reset, then deltas from index 0', async () => {
    const id = await job({ model: 'breaks-once', input: 'one two three four' })
    await pool.runOnce()
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 1 })
    expect(events.get(id)!.map((e) => (e.kind === 'reset' ? 'reset' : `${e.index}:${e.text}`))).toEqual(['0:one ', '1:two ', 'reset', '0:one ', '1:two ', '2:three ', '3:four'])
    expect(clientText(events.get(id)!)).toBe(resultOf(r)!.output)
    // the broken try ran: its words count as a lower bound, and it is charged as unmetered
    expect(decisions.get(id)).toEqual([expect.objectContaining({
      kind: 'finish',
      usage: {
        calls: [{ model: 'breaks-once', input_tokens: 5, output_tokens: 2, reported: false }, { model: 'breaks-once', input_tokens: 5, output_tokens: 5, reported: true }],
        unmetered: 1,
      },
    })])
  })

  it('the next claim of a job that streamed starts with a reset', async () => {
    const id = await job({ model: 'breaks-thrice', input: 'alpha beta' })
    await pool.runOnce()
    expect(await row(t.app, id)).toMatchObject({ status: 'pending', attempts: 1 })
    expect(decisions.get(id)).toEqual([expect.objectContaining({ kind: 'retry', usage: expect.objectContaining({ unmetered: 3 }) })])
    expect(events.get(id)!.map((e) => e.kind)).toEqual(['delta', 'reset', 'delta', 'reset', 'delta'])

    clock.advance(120_000) // past the job-level backoff
    events.set(id, [])
    expect(await pool.runOnce()).toBe(1)
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 2 })
    // the earlier claim's text is void before this claim's first delta
    expect(events.get(id)![0]).toEqual({ kind: 'reset' })
    expect(clientText(events.get(id)!)).toBe('alpha beta')
  })

  it('a model that fails retryably falls back: the result names the model that answered, with its usage', async () => {
    const id = await job({ model: 'down', input: 'fall back please' })
    await pool.runOnce()
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', attempts: 1, model: 'down' })
    expect(resultOf(r)).toMatchObject({ output: 'fall back please', provider: 'echo', model: 'streamer', usage: { input_tokens: 4, output_tokens: 4 } })
    expect(clientText(events.get(id)!)).toBe('fall back please')
    // the 503s cost nothing; the attempt's bill is the fallback's one call
    expect(decisions.get(id)![0]).toMatchObject({ kind: 'finish', usage: { calls: [{ model: 'streamer', input_tokens: 4, output_tokens: 4, reported: true }], unmetered: 0 } })
  })

  it('a provider that reports no usage leaves the usage unknown, never invented', async () => {
    const id = await job({ model: 'quiet', input: 'how much?' })
    await pool.runOnce()
    const r = await row(t.app, id)
    expect(r).toMatchObject({ status: 'succeeded', input_tokens: null, output_tokens: null })
    expect(resultOf(r)).toMatchObject({ output: 'told nothing', usage: null })
    expect(clientText(events.get(id)!)).toBe('told nothing')
    expect(decisions.get(id)).toEqual([expect.objectContaining({ kind: 'finish', usage: { calls: [{ model: 'quiet', input_tokens: 0, output_tokens: 0, reported: false }], unmetered: 1 } })])
  })

  it('a claim given back at shutdown after it streamed voids its text, since the next claim keeps its attempt number', async () => {
    const id = await job({ model: 'crawler', input: 'slow words here' })
    const running = pool.runOnce()
    await waitFor(() => (events.get(id)!.length > 0 ? true : undefined), 10_000, 'the first delta')
    pool.abortJob(id, 'shutdown')
    await running
    expect(events.get(id)).toEqual([{ kind: 'delta', index: 0, text: 'slow ' }, { kind: 'reset' }])
    expect(decisions.get(id)).toEqual([expect.objectContaining({ kind: 'release', usage: { calls: [{ model: 'crawler', input_tokens: 4, output_tokens: 2, reported: false }], unmetered: 1 } })])
    expect(await row(t.app, id)).toMatchObject({ status: 'pending', attempts: 0 })
    // out of the way of the next claims
    const canceled = await t.app.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers: auth })
    expect(canceled.statusCode).toBe(200)
  })

  it('a cancel mid-stream closes the provider socket at once and drops the result, keeping what the call cost', async () => {
    const id = await job({ model: 'remote', input: 'hold on' })
    const running = pool.runOnce()
    await waitFor(() => (events.get(id)!.length > 0 ? true : undefined), 10_000, 'the first delta')
    expect(events.get(id)).toEqual([{ kind: 'delta', index: 0, text: 'never' }])
    expect(pool.abortJob(id, 'cancel')).toBe(true)
    await remoteClosed // the test times out here if the socket stayed open
    await running
    expect(decisions.get(id)).toEqual([{ kind: 'drop', reason: 'canceled while running', usage: { calls: [{ model: 'remote', input_tokens: 0, output_tokens: 0, reported: false }], unmetered: 1 } }])
    // nothing was written by the worker: the row is still running under its lease
    expect((await row(t.app, id)).status).toBe('running')
  })
})
