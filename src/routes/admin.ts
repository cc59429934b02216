import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { Readable } from 'node:stream'
import { listEvents, resendEvent } from '../db/events-repository.js'
import { listJobs, streamUsage, type UsageGroup, type UsageRow } from '../db/jobs-repository.js'
import { toEventResponse } from '../events/event-response.js'
import { ApiError } from '../errors.js'
import { readAdminStats, STATS_DEFAULT_DAYS, STATS_MAX_DAYS, statsRange } from '../jobs/admin-stats.js'
import { cancelJob } from '../jobs/cancel-job.js'
import { toJobResponse } from '../jobs/job-response.js'
import { jobIdOf } from '../jobs/read-job.js'
import { retryJob } from '../jobs/retry-job.js'
import { AdminEvent, AdminEventList, AdminEventsQuery, AdminJobList, AdminJobsQuery, AdminStats, AdminStatsQuery, EventIdParams, UsageCsvQuery } from '../schemas/admin.js'
import { errorResponses, JobIdParams } from '../schemas/common.js'
import { decodeCursor, decodeIdCursor, encodeIdCursor, page, pageBy } from './cursor.js'

const JobRef = Type.Ref('Job')

function dateOf(raw: string | undefined, field: string): number | undefined {
  if (raw === undefined) return undefined
  const ms = Date.parse(raw.length === 10 ? `${raw}T00:00:00Z` : raw)
  if (Number.isNaN(ms)) throw new ApiError('ai_invalid_request', `${field}: must be a date (YYYY-MM-DD) or an ISO-8601 time`, { details: { field, reason: 'not a date' } })
  return ms
}

function csvCell(value: string | number): string {
  const text = String(value)
  // Quote always, and defuse spreadsheet formulas in text cells.
  const safe = /^[=+\-@\t\r]/.test(text) && typeof value === 'string' ? `'${text}` : text
  return `"${safe.replace(/"/g, '""')}"`
}

const USAGE_COLUMNS = ['jobs', 'pending', 'running', 'succeeded', 'failed', 'canceled', 'input_tokens', 'output_tokens', 'provider_ms'] as const

/** `group=day,user` → the groups in the export's fixed order; refuses what is not a group. */
function usageGroups(raw: string | undefined): UsageGroup[] {
  if (raw === undefined || raw === '') return ['day', 'user', 'model']
  const asked = raw.split(',').map((g) => g.trim())
  for (const g of asked) {
    if (g !== 'day' && g !== 'user' && g !== 'model') throw new ApiError('ai_invalid_request', 'group: must list day, user and/or model, comma-separated', { details: { field: 'group', reason: `unknown group "${g}"` } })
  }
  return (['day', 'user', 'model'] as const).filter((g) => asked.includes(g))
}

/** The admin API (SPEC §4): AI_ADMIN_CAPABILITY only, which a signed public token never has. */
export async function adminRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.get('/admin/jobs', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Every job, filtered', tags: ['admin'],
      querystring: AdminJobsQuery,
      response: { 200: AdminJobList, ...errorResponses },
    },
  }, async (request) => {
    const q = request.query
    const limit = q.limit ?? 20
    const from = dateOf(q.from, 'from')
    const to = dateOf(q.to, 'to')
    const before = q.cursor ? decodeCursor(q.cursor) : undefined
    const rows = await listJobs(app.db.db, {
      limit: limit + 1,
      ...(q.status ? { status: q.status } : {}),
      ...(q.user_id !== undefined ? { userId: q.user_id } : {}),
      ...(q.model ? { model: q.model } : {}),
      ...(from !== undefined ? { createdFromMs: from } : {}),
      ...(to !== undefined ? { createdToMs: to } : {}),
      ...(before ? { before } : {}),
    })
    const shown = page(rows, limit)
    return { jobs: shown.rows.map((row) => ({ ...toJobResponse(row, app.resultLinks.forRow(row)), user_id: Number(row.user_id) })), next_cursor: shown.nextCursor }
  })

  app.post('/admin/jobs/:id/retry', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Run a finished job again', description: 'The one way a terminal job runs again: its attempts are reset and it is pending.', tags: ['admin'],
      params: JobIdParams,
      body: Type.Union([Type.Null(), Type.Object({})], { description: 'no body is needed' }),
      response: { 200: JobRef, ...errorResponses },
    },
  }, async (request) => toJobResponse(await retryJob(app, jobIdOf(request.params.id))))

  app.post('/admin/jobs/:id/cancel', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Cancel any job', tags: ['admin'],
      params: JobIdParams,
      body: Type.Union([Type.Null(), Type.Object({})], { description: 'no body is needed' }),
      response: { 200: JobRef, ...errorResponses },
    },
  }, async (request) => {
    const row = await cancelJob(app, request.principal, jobIdOf(request.params.id))
    return toJobResponse(row, app.resultLinks.forRow(row))
  })

  app.get('/admin/events', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Events to WordPress and their deliveries', tags: ['admin'],
      description: 'The outbox of SPEC §10, newest first, filtered by `status` (pending, delivered, failed). Delivered events are kept 7 days; failed ones until resent.',
      querystring: AdminEventsQuery,
      response: { 200: AdminEventList, ...errorResponses },
    },
  }, async (request) => {
    const q = request.query
    const limit = q.limit ?? 20
    const beforeId = q.cursor === undefined ? undefined : decodeIdCursor(q.cursor)
    const rows = await listEvents(app.db.db, { limit: limit + 1, ...(q.status ? { status: q.status } : {}), ...(beforeId ? { beforeId } : {}) })
    const shown = pageBy(rows, limit, (last) => encodeIdCursor(Number(last.id)))
    return { events: shown.rows.map(toEventResponse), next_cursor: shown.nextCursor }
  })

  app.post('/admin/events/:id/resend', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Send an event to WordPress again', tags: ['admin'],
      description: 'The event is pending and due now, its attempts start over and it is retried for another 24 h. It keeps its webhook-id, so a WordPress that already handled it acknowledges it without running its hooks again.',
      params: EventIdParams,
      body: Type.Union([Type.Null(), Type.Object({})], { description: 'no body is needed' }),
      response: { 200: AdminEvent, ...errorResponses },
    },
  }, async (request) => {
    const id = Number(request.params.id)
    const row = Number.isSafeInteger(id) ? await resendEvent(app.db.db, id, app.clock.now()) : undefined
    if (!row) throw new ApiError('ai_not_found', 'No event with that id.')
    app.outbox?.wake()
    return toEventResponse(row)
  })

  app.get('/admin/stats', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: "The admin page's charts", tags: ['admin'],
      description: `Jobs created in [from, to) (default: the last ${STATS_DEFAULT_DAYS} UTC days, today included; at most ${STATS_MAX_DAYS} days): tokens and jobs per day, jobs by status, p50/p95 provider latency per day, the circuit breakers, budget use and event deliveries.`,
      querystring: AdminStatsQuery,
      response: { 200: AdminStats, ...errorResponses },
    },
  }, async (request) => {
    const range = statsRange(dateOf(request.query.from, 'from'), dateOf(request.query.to, 'to'), app.clock.now())
    return readAdminStats(app, range)
  })

  app.get('/admin/usage.csv', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Usage as CSV, grouped by day, user and/or model', tags: ['admin'],
      description: 'Jobs created in [from, to) (default: the last 30 days), grouped by `group` (any of day, user, model; default all three), with jobs by status, tokens and provider time. Streamed: an export of any size holds one chunk of rows at a time.',
      querystring: UsageCsvQuery,
      response: { 200: { description: 'CSV', content: { 'text/csv': { schema: Type.String() } } }, ...errorResponses },
    },
  }, async (request, reply) => {
    const from = dateOf(request.query.from, 'from') ?? app.clock.now() - 30 * 86_400_000
    const to = dateOf(request.query.to, 'to') ?? app.clock.now() + 86_400_000
    const groups = usageGroups(request.query.group)
    const header = [...groups.map((g) => (g === 'user' ? 'user_id' : g)), ...USAGE_COLUMNS].join(',')
    const line = (r: UsageRow) => [
      ...groups.map((g) => (g === 'day' ? r.day : g === 'user' ? r.user_id : csvCell(r.model ?? ''))),
      ...USAGE_COLUMNS.map((c) => r[c]),
    ].join(',')
    const rows = streamUsage(app.db, from, to, groups)
    // The first row is read before the answer starts, so a database that is down is still a 503.
    const first = await rows.next()
    async function* csv(): AsyncGenerator<string> {
      yield `${header}\n`
      if (first.done) return
      yield `${line(first.value)}\n`
      for await (const r of rows) yield `${line(r)}\n`
    }
    reply.header('Content-Type', 'text/csv; charset=utf-8')
    reply.header('Content-Disposition', 'attachment; filename="ai-usage.csv"')
    return reply.send(Readable.from(csv()))
  })
}
