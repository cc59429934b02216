import type { FastifyInstance, FastifyRequest } from 'fastify'
import { findJob, listJobs, retryJob, usageByDay } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'
import { toJobResponse } from '../jobs/job-response.js'
import { decodeCursor, encodeCursor, parseJobId, parseLimit, parseStatus } from './jobs.js'

function parseDate(raw: unknown, field: string): number | undefined {
  if (raw === undefined || raw === '') return undefined
  const ms = typeof raw === 'string' && /^\d{4}-\d\d-\d\d(T[\d:.]+(Z|[+-]\d\d:\d\d)?)?$/.test(raw) ? Date.parse(raw.length === 10 ? `${raw}T00:00:00Z` : raw) : Number.NaN
  if (Number.isNaN(ms)) throw new ApiError('ai_invalid_request', `${field}: must be a date (YYYY-MM-DD) or an ISO-8601 time`, { details: { field, reason: 'not a date' } })
  return ms
}

function parseUserId(raw: unknown): number | undefined {
  if (raw === undefined || raw === '') return undefined
  if (typeof raw !== 'string' || !/^\d{1,19}$/.test(raw)) throw new ApiError('ai_invalid_request', 'user_id: must be a whole number', { details: { field: 'user_id', reason: 'not a number' } })
  return Number(raw)
}

function csvCell(value: string | number): string {
  const text = String(value)
  // Quote always, and defuse spreadsheet formulas in text cells.
  const safe = /^[=+\-@\t\r]/.test(text) && typeof value === 'string' ? `'${text}` : text
  return `"${safe.replace(/"/g, '""')}"`
}

/** The admin API (SPEC §4): AI_ADMIN_CAPABILITY only, which a signed public token never has. */
export async function adminRoutes(app: FastifyInstance): Promise<void> {
  const gw = app.gateway

  app.addHook('preHandler', async (request: FastifyRequest) => {
    const principal = await gw.authenticate(request)
    if (!principal.isAdmin) throw new ApiError('ai_forbidden', 'The admin API needs the administrator capability.')
  })

  app.get<{ Querystring: Record<string, unknown> }>('/admin/jobs', async (request) => {
    const q = request.query
    const limit = parseLimit(q.limit)
    const status = parseStatus(q.status)
    const userId = parseUserId(q.user_id)
    const from = parseDate(q.from, 'from')
    const to = parseDate(q.to, 'to')
    const before = typeof q.cursor === 'string' && q.cursor !== '' ? decodeCursor(q.cursor) : undefined
    if (q.model !== undefined && typeof q.model !== 'string') throw new ApiError('ai_invalid_request', 'model: must be a string')
    const rows = await listJobs(gw.handle.db, {
      limit: limit + 1,
      ...(status ? { status } : {}),
      ...(userId !== undefined ? { userId } : {}),
      ...(typeof q.model === 'string' && q.model !== '' ? { model: q.model } : {}),
      ...(from !== undefined ? { createdFromMs: from } : {}),
      ...(to !== undefined ? { createdToMs: to } : {}),
      ...(before ? { before } : {}),
    })
    const page = rows.slice(0, limit)
    return {
      jobs: page.map((row) => ({ ...toJobResponse(row), user_id: Number(row.user_id), owner_key: row.owner_key })),
      next_cursor: rows.length > limit ? encodeCursor(page[page.length - 1]!) : null,
    }
  })

  app.post<{ Params: { id: string } }>('/admin/jobs/:id/retry', async (request) => {
    const id = parseJobId(request.params.id)
    const before = await findJob(gw.handle.db, id)
    if (!before) throw new ApiError('ai_not_found', 'No job with that id.')
    if (!(await retryJob(gw.handle.db, id, gw.clock.now()))) {
      throw new ApiError('ai_job_finished', `Only a finished job can be retried; this one is ${before.status}.`)
    }
    gw.pool.wake()
    gw.events.created()
    gw.events.changed(id)
    return toJobResponse((await findJob(gw.handle.db, id))!)
  })

  app.get<{ Querystring: Record<string, unknown> }>('/admin/usage.csv', async (request, reply) => {
    const from = parseDate(request.query.from, 'from') ?? gw.clock.now() - 30 * 86_400_000
    const to = parseDate(request.query.to, 'to') ?? gw.clock.now() + 86_400_000
    const rows = await usageByDay(gw.handle, from, to)
    const lines = ['day,user_id,model,jobs,succeeded,failed,input_tokens,output_tokens,provider_ms']
    for (const r of rows) {
      lines.push([r.day, r.user_id, csvCell(r.model), r.jobs, r.succeeded, r.failed, r.input_tokens, r.output_tokens, r.provider_ms].join(','))
    }
    reply.header('Content-Type', 'text/csv; charset=utf-8')
    reply.header('Content-Disposition', 'attachment; filename="ai-usage.csv"')
    reply.header('Cache-Control', 'private, no-store')
    return `${lines.join('\n')}\n`
  })
}
