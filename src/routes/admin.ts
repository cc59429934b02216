import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { listJobs, usageByDay } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'
import { cancelJob } from '../jobs/cancel-job.js'
import { toJobResponse } from '../jobs/job-response.js'
import { jobIdOf } from '../jobs/read-job.js'
import { retryJob } from '../jobs/retry-job.js'
import { AdminJobList, AdminJobsQuery, UsageCsvQuery } from '../schemas/admin.js'
import { errorResponses, JobIdParams } from '../schemas/common.js'
import { decodeCursor, page } from './cursor.js'

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
    return { jobs: shown.rows.map((row) => ({ ...toJobResponse(row), user_id: Number(row.user_id) })), next_cursor: shown.nextCursor }
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
  }, async (request) => toJobResponse(await cancelJob(app, request.principal, jobIdOf(request.params.id))))

  app.get('/admin/usage.csv', {
    config: { auth: 'admin', noStore: true },
    schema: {
      summary: 'Usage per day, user and model, as CSV', tags: ['admin'],
      querystring: UsageCsvQuery,
      response: { 200: { description: 'CSV', content: { 'text/csv': { schema: Type.String() } } }, ...errorResponses },
    },
  }, async (request, reply) => {
    const from = dateOf(request.query.from, 'from') ?? app.clock.now() - 30 * 86_400_000
    const to = dateOf(request.query.to, 'to') ?? app.clock.now() + 86_400_000
    const rows = await usageByDay(app.db, from, to)
    const lines = ['day,user_id,model,jobs,succeeded,failed,input_tokens,output_tokens,provider_ms']
    for (const r of rows) {
      lines.push([r.day, r.user_id, csvCell(r.model), r.jobs, r.succeeded, r.failed, r.input_tokens, r.output_tokens, r.provider_ms].join(','))
    }
    reply.header('Content-Type', 'text/csv; charset=utf-8')
    reply.header('Content-Disposition', 'attachment; filename="ai-usage.csv"')
    return `${lines.join('\n')}\n`
  })
}
