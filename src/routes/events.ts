import type { FastifyInstance } from 'fastify'
import { findJob, type JobRow } from '../db/jobs-repository.js'
import { TERMINAL_STATUSES } from '../db/schema.js'
import { toError } from '../errors.js'
import { toJobResponse } from '../jobs/job-response.js'
import { parseJobId, visibleTo } from './jobs.js'

const HEARTBEAT_MS = 15_000
// Events normally arrive at once (local, or through Redis); this re-read covers a lost message.
const RECHECK_MS = 2_000

/**
 * `GET /jobs/:id/events` (SPEC §4): Server-Sent Events. `event: status` carries the job JSON on
 * each change, with the job's version as the event id, so `Last-Event-ID` resumes without a
 * repeat; the stream ends after a terminal state. A comment line every 15 s keeps proxies open.
 */
export async function eventRoutes(app: FastifyInstance): Promise<void> {
  const gw = app.gateway

  app.get<{ Params: { id: string } }>('/jobs/:id/events', async (request, reply) => {
    const principal = await gw.authenticate(request)
    const id = parseJobId(request.params.id)
    const first = visibleTo(await findJob(gw.handle.db, id), principal)
    const lastEventId = Number(request.headers['last-event-id'])
    let sentVersion = Number.isSafeInteger(lastEventId) ? lastEventId : 0

    reply.hijack()
    const res = reply.raw
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'private, no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
      'X-Request-Id': request.id,
    })
    res.write('retry: 3000\n\n')

    let closed = false
    let reading = false
    let again = false
    const timers: NodeJS.Timeout[] = []
    const finish = () => {
      if (closed) return
      closed = true
      for (const t of timers) clearInterval(t)
      off()
      res.end()
    }

    const send = (row: JobRow) => {
      if (row.version > sentVersion) {
        sentVersion = row.version
        res.write(`event: status\nid: ${row.version}\ndata: ${JSON.stringify(toJobResponse(row))}\n\n`)
      }
      if (TERMINAL_STATUSES.includes(row.status)) finish()
    }

    // Reads are serialised and coalesced: a burst of events costs at most two reads.
    const refresh = async () => {
      if (closed) return
      if (reading) {
        again = true
        return
      }
      reading = true
      try {
        do {
          again = false
          const row = await findJob(gw.handle.db, id)
          if (!row) return finish()
          send(row)
        } while (again && !closed)
      } catch (err) {
        request.log.warn({ err: toError(err), jobId: id }, 'event stream could not read the job; will retry')
      } finally {
        reading = false
      }
    }

    const off = gw.events.onChanged((changed) => {
      if (changed === id) void refresh()
    })
    request.raw.on('close', finish)
    timers.push(setInterval(() => { if (!closed) res.write(': keep-alive\n\n') }, HEARTBEAT_MS))
    timers.push(setInterval(() => void refresh(), RECHECK_MS))
    for (const t of timers) t.unref()
    send(first)
  })
}
