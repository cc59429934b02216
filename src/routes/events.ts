import { randomUUID } from 'node:crypto'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import type { JobRow } from '../db/jobs-repository.js'
import { TERMINAL_STATUSES } from '../db/schema.js'
import { ApiError } from '../errors.js'
import { toJobResponse } from '../jobs/job-response.js'
import { jobIdOf, readVisibleJob } from '../jobs/read-job.js'
import { errorResponses, JobIdParams } from '../schemas/common.js'

/**
 * The headers of every event stream the gateway serves (the job's SSE and the OpenAI-compatible
 * stream): no caching or transforming proxies, no buffering in nginx (`X-Accel-Buffering`).
 */
export function eventStreamHeaders(requestId: string): Record<string, string> {
  return {
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'private, no-cache, no-transform',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
    'X-Content-Type-Options': 'nosniff',
    'X-Request-Id': requestId,
  }
}

export const HEARTBEAT_MS = 15_000
/** SPEC §8: at most 10 open streams per owner, across replicas. */
export const STREAMS_PER_OWNER = 10
// A stream's slot is renewed with every heartbeat; one whose replica died frees itself after this.
export const STREAM_SLOT_TTL_MS = 3 * HEARTBEAT_MS

/**
 * `GET /jobs/:id/events` (SPEC §4): Server-Sent Events. `event: status` carries the job JSON on
 * each change, with the job's version as the event id, so `Last-Event-ID` resumes without a
 * repeat; the stream ends after a terminal state. A comment line every 15 s keeps proxies open.
 * Changes come from the replica's job watcher: one read per change, however many streams.
 */
export async function eventRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  // Open streams end when the app closes (SIGTERM): a client reconnects with Last-Event-ID to
  // another replica instead of holding this one open until its grace runs out.
  const open = new Set<() => void>()
  app.addHook('preClose', async () => {
    for (const end of [...open]) end()
  })

  app.get('/jobs/:id/events', {
    config: { auth: 'user' },
    schema: {
      summary: 'Follow a job as Server-Sent Events',
      description: '`event: status` with the job JSON on each change (`id:` is the job\'s version, so `Last-Event-ID` resumes); `event: delta` with `{ index, text }` while a streaming provider runs, and `event: reset` when a retry starts the text over; ends after a terminal state. At most 10 open streams per owner.',
      tags: ['jobs'],
      params: JobIdParams,
      headers: Type.Object({ 'last-event-id': Type.Optional(Type.String()) }),
      response: {
        200: { description: 'An event stream', content: { 'text/event-stream': { schema: Type.String() } } },
        ...errorResponses,
      },
    },
  }, async (request, reply) => {
    const { principal } = request
    const id = jobIdOf(request.params.id)
    const first = await readVisibleJob(app, principal, id)
    const slotKey = `streams:${principal.ownerKey}`
    const slot = randomUUID()
    const holdSlot = () => app.store.holdSlot(slotKey, slot, STREAMS_PER_OWNER, STREAM_SLOT_TTL_MS, app.clock.now())
    if (!(await holdSlot())) {
      throw new ApiError('ai_too_many_streams', `At most ${STREAMS_PER_OWNER} event streams may be open at once; close one first.`, { headers: { 'Retry-After': '15' } })
    }
    const lastEventId = Number(request.headers['last-event-id'])
    let sentVersion = Number.isSafeInteger(lastEventId) ? lastEventId : 0

    reply.hijack()
    const res = reply.raw
    res.writeHead(200, eventStreamHeaders(request.id))
    res.write('retry: 3000\n\n')

    let closed = false
    const send = (row: JobRow | undefined) => {
      if (closed) return
      if (!row) return finish()
      if (row.version > sentVersion) {
        sentVersion = row.version
        res.write(`event: status\nid: ${row.version}\ndata: ${JSON.stringify(toJobResponse(row, app.resultLinks.forRow(row)))}\n\n`)
      }
      if (TERMINAL_STATUSES.includes(row.status)) finish()
    }
    // Deltas are live only (SPEC §9): no `id:`, so Last-Event-ID keeps meaning the job's version,
    // and a stream opened later gets only what is sent from then on. None follow a terminal status.
    const unwatch = app.jobWatcher.watch(id, {
      row: send,
      delta: (delta) => {
        if (closed) return
        if ('reset' in delta) res.write('event: reset\ndata: {}\n\n')
        else res.write(`event: delta\ndata: ${JSON.stringify({ index: delta.index, text: delta.text })}\n\n`)
      },
    })
    const heartbeat = setInterval(() => {
      if (closed) return
      res.write(': keep-alive\n\n')
      holdSlot().catch(() => {})
    }, HEARTBEAT_MS)
    heartbeat.unref()
    function finish(): void {
      if (closed) return
      closed = true
      open.delete(finish)
      clearInterval(heartbeat)
      unwatch()
      app.store.releaseSlot(slotKey, slot).catch(() => {})
      res.end()
    }
    res.on('close', finish)
    open.add(finish)
    send(first)
  })
}
