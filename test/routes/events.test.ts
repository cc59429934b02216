import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bearer, buildTestApp, DIALECTS, type TestApp } from '../helpers.js'

const BASE = '/wp-json/ai/v1'

interface SseEvent {
  event?: string
  id?: string
  data?: string
}

/** Reads a whole SSE response (the stream ends after a terminal state) into events. */
async function readStream(res: Response, onEvent?: (e: SseEvent) => void): Promise<{ events: SseEvent[]; comments: string[] }> {
  const decoder = new TextDecoder()
  let buffer = ''
  const events: SseEvent[] = []
  const comments: string[] = []
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true })
    let end: number
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const e: SseEvent = {}
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) comments.push(line)
        const m = /^(event|id|data): (.*)$/.exec(line)
        if (m) e[m[1] as keyof SseEvent] = m[2]
      }
      if (e.event) {
        events.push(e)
        onEvent?.(e)
      }
    }
  }
  return { events, comments }
}

describe.each(DIALECTS)('GET /jobs/:id/events (%s)', (dialect) => {
  let t: TestApp
  let url: string
  let owner: Record<string, string>
  beforeAll(async () => {
    t = await buildTestApp({ dialect, name: `gw_t2_events_${dialect}` })
    await t.app.listen({ port: 0, host: '127.0.0.1' })
    url = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}${BASE}`
    owner = await bearer({ sub: '7' })
  })
  afterAll(async () => {
    await t?.close()
  })

  const create = async (input: string) => {
    const res = await fetch(`${url}/jobs`, { method: 'POST', headers: { ...owner, 'content-type': 'application/json' }, body: JSON.stringify({ input }) })
    expect(res.status).toBe(202)
    return ((await res.json()) as { job_id: number }).job_id
  }

  it('streams the job on each change and ends after the terminal state', async () => {
    const id = await create('stream me')
    const res = await fetch(`${url}/jobs/${id}/events`, { headers: owner })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    expect(res.headers.get('x-accel-buffering')).toBe('no')
    expect(res.headers.get('x-request-id')).toBeTruthy()
    let ran = false
    const { events } = await readStream(res, (e) => {
      // Run the job once the first (pending) event has arrived.
      if (!ran && e.event === 'status') {
        ran = true
        void t.app.pool.runOnce()
      }
    })
    const statuses = events.filter((e) => e.event === 'status')
    const jobs = statuses.map((e) => JSON.parse(e.data!) as { job_id: number; status: string })
    expect(jobs[0]).toMatchObject({ job_id: id, status: 'pending' })
    expect(jobs.at(-1)).toMatchObject({ job_id: id, status: 'succeeded', result: { output: 'stream me' } })
    // The echo provider streamed the output as deltas, which carry no id.
    const deltas = events.filter((e) => e.event === 'delta')
    expect(deltas.map((e) => (JSON.parse(e.data!) as { text: string }).text).join('')).toBe('stream me')
    for (const d of deltas) expect(d.id).toBeUndefined()
    // Status event ids are the job's versions: strictly increasing.
    const ids = statuses.map((e) => Number(e.id))
    expect(ids).toEqual([...ids].sort((a, b) => a - b))
    expect(new Set(ids).size).toBe(ids.length)
  })

  it('honours Last-Event-ID: a client that has the current version gets no repeat', async () => {
    const id = await create('already seen')
    await t.app.pool.runOnce()
    const job = await fetch(`${url}/jobs/${id}`, { headers: owner })
    const version = /"\d+\.(\d+)"/.exec(job.headers.get('etag')!)![1]
    const caughtUp = await readStream(await fetch(`${url}/jobs/${id}/events`, { headers: { ...owner, 'last-event-id': version! } }))
    expect(caughtUp.events).toEqual([])
    const behind = await readStream(await fetch(`${url}/jobs/${id}/events`, { headers: { ...owner, 'last-event-id': '1' } }))
    expect(behind.events).toHaveLength(1)
    expect(JSON.parse(behind.events[0]!.data!)).toMatchObject({ status: 'succeeded' })
  })

  it("answers 404 for another owner's job and 401 without credentials", async () => {
    const id = await create('private')
    const other = await fetch(`${url}/jobs/${id}/events`, { headers: await bearer({ sub: '8' }) })
    expect(other.status).toBe(404)
    expect(((await other.json()) as { code: string }).code).toBe('ai_not_found')
    expect((await fetch(`${url}/jobs/${id}/events`)).status).toBe(401)
  })
})
