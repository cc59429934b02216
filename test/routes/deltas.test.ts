/**
 * Deltas over SSE across replicas (SPEC §9): a stream opened on replica A sees the deltas of a job
 * that replica B runs, then the terminal status; the deltas after the last reset, joined in index
 * order, equal the stored output; deltas carry no id; polling sees nothing change until the end.
 */
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { bearer, freshDatabase, REDIS_URL, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'

interface Event { event: string; id?: string; data: any }

/** Reads an SSE stream to its end. */
async function readEvents(res: Response): Promise<Event[]> {
  const events: Event[] = []
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true })
    let end: number
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const e: Partial<Event> = {}
      for (const line of block.split('\n')) {
        const m = /^(event|id|data): ?(.*)$/.exec(line)
        if (m?.[1] === 'event') e.event = m[2]
        if (m?.[1] === 'id') e.id = m[2]
        if (m?.[1] === 'data') e.data = JSON.parse(m[2]!)
      }
      if (e.event) events.push(e as Event)
    }
  }
  return events
}

/** The text of the deltas after the last reset, joined in index order. */
function joined(events: Event[]): string {
  const last = events.map((e) => e.event).lastIndexOf('reset')
  return events.slice(last + 1).filter((e) => e.event === 'delta').sort((a, b) => a.data.index - b.data.index).map((e) => e.data.text).join('')
}

describe('deltas across replicas (MariaDB + Redis)', () => {
  let a: FastifyInstance
  let b: FastifyInstance
  let cleanup: () => Promise<void>
  let urlA: string
  const owner = () => bearer({ sub: '81' })

  beforeAll(async () => {
    const db = await freshDatabase('mysql', `gw_deltas_${RUN}`)
    cleanup = db.cleanup
    const env = {
      DATABASE_URL: db.url, REDIS_URL, WP_TABLE_PREFIX: `wpdl${RUN}_`, RATE_LIMIT_MAX: '0', DEDUPE_WINDOW_SECONDS: '0',
      AI_MODELS: JSON.stringify({
        'echo-stream': { provider: 'echo', delta_ms: 15 },
        'echo-breaks': { provider: 'echo', delta_ms: 15, break_after: 3, fail_times: 1 },
      }),
    }
    // A serves streams and runs nothing; B runs every job.
    a = await buildApp(testConfig({ ...env, WORKER_CONCURRENCY: '0' }), { logger: false })
    b = await buildApp(testConfig(env), { logger: false, migrate: false, startWorkers: false })
    await a.listen({ port: 0, host: '127.0.0.1' })
    urlA = `http://127.0.0.1:${(a.server.address() as AddressInfo).port}${BASE}`
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await cleanup?.()
  })

  /** Creates a job on A, opens its stream on A, then lets B claim and run it. */
  async function streamJob(model: string, input: string): Promise<{ id: number; events: Event[]; polls: number[] }> {
    const headers = await owner()
    const res = await fetch(`${urlA}/jobs`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ model, input }) })
    expect(res.status).toBe(202)
    const id = ((await res.json()) as { job_id: number }).job_id
    const stream = await fetch(`${urlA}/jobs/${id}/events`, { headers })
    expect(stream.status).toBe(200)
    const reading = readEvents(stream)
    // Polling while it runs: the version does not move until the job ends.
    const polls: number[] = []
    const polling = (async () => {
      for (;;) {
        const r = await a.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers })
        const job = r.json()
        polls.push(Number(String(r.headers.etag).split('.')[1]?.replace('"', '')))
        if (['succeeded', 'failed', 'canceled'].includes(job.status)) return
        await new Promise((r2) => setTimeout(r2, 20))
      }
    })()
    // B claims only now, so the stream sees every delta from the first.
    expect(await b.pool.runOnce()).toBe(1)
    const events = await reading
    await polling
    return { id, events, polls }
  }

  it('a stream on A sees the deltas of the job B runs, then the terminal status; the deltas join to the output', async () => {
    const input = 'one two three four five six seven eight nine ten'
    const { id, events } = await streamJob('echo-stream', input)
    const deltas = events.filter((e) => e.event === 'delta')
    expect(deltas.length).toBeGreaterThan(5)
    for (const d of deltas) expect(d.id).toBeUndefined()
    expect(deltas.map((d) => d.data.index)).toEqual(deltas.map((_, i) => i))
    const final = events.at(-1)!
    expect(final.event).toBe('status')
    expect(final.data).toMatchObject({ job_id: id, status: 'succeeded' })
    expect(joined(events)).toBe(final.data.result.output)
    expect(final.data.result.output).toBe(input)
    // Every delta came before the final status.
    expect(events.findIndex((e) => e.event === 'delta')).toBeLessThan(events.length - 1)
  })

  it('a stream that breaks partway is retried: reset, then deltas from index 0; the text after the last reset is the output', async () => {
    const input = 'alpha beta gamma delta epsilon zeta eta theta'
    const { events } = await streamJob('echo-breaks', input)
    const kinds = events.map((e) => e.event)
    const reset = kinds.indexOf('reset')
    expect(reset).toBeGreaterThan(0)
    expect(kinds.slice(0, reset).filter((k) => k === 'delta').length).toBeGreaterThanOrEqual(1)
    const after = events.slice(reset + 1).filter((e) => e.event === 'delta')
    expect(after[0]?.data.index).toBe(0)
    const final = events.at(-1)!
    expect(final.data.status).toBe('succeeded')
    expect(joined(events)).toBe(input)
    expect(final.data.result.output).toBe(input)
  })

  it('polling sees nothing change while deltas flow: one version for pending and running, then the end', async () => {
    const { polls } = await streamJob('echo-stream', 'a b c d e f g h i j k l m n o p')
    const versions = [...new Set(polls)]
    // Created (1), claimed (2), finished (3): deltas never bump the version.
    expect(versions.length).toBeLessThanOrEqual(3)
  })
})

describe('deltas within one process, without Redis (SQLite)', () => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  beforeAll(async () => {
    const db = await freshDatabase('sqlite', `gw_deltas_local_${RUN}`)
    cleanup = db.cleanup
    app = await buildApp(testConfig({ DATABASE_URL: db.url, RATE_LIMIT_MAX: '0', AI_MODELS: JSON.stringify({ 'echo-stream': { provider: 'echo', delta_ms: 5 } }) }), { logger: false, startWorkers: false })
    await app.listen({ port: 0, host: '127.0.0.1' })
  })
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
  })

  it('two streams of one job both get every delta, and the deltas join to the output', async () => {
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}${BASE}`
    const headers = await bearer({ sub: '82' })
    const res = await fetch(`${url}/jobs`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'echo-stream', input: 'red green blue yellow' }) })
    const id = ((await res.json()) as { job_id: number }).job_id
    const streams = await Promise.all([1, 2].map(() => fetch(`${url}/jobs/${id}/events`, { headers })))
    const reading = streams.map((s) => readEvents(s))
    expect(await app.pool.runOnce()).toBe(1)
    const [first, second] = await Promise.all(reading)
    for (const events of [first!, second!]) {
      expect(events.filter((e) => e.event === 'delta').length).toBeGreaterThan(1)
      expect(joined(events)).toBe('red green blue yellow')
      expect(events.at(-1)?.data.status).toBe('succeeded')
    }
    expect(first!.filter((e) => e.event === 'delta')).toEqual(second!.filter((e) => e.event === 'delta'))
  })
})
