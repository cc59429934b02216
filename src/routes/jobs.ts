import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Principal } from '../auth/principal.js'
import { cancelJob, findJob, listJobs, type JobRow } from '../db/jobs-repository.js'
import type { JobStatus } from '../db/schema.js'
import { buildJwks } from '../dispatch/jwt.js'
import { ApiError } from '../errors.js'
import { createJob, rateLimitHeaders } from '../jobs/create-job.js'
import { jobEtag, toJobResponse } from '../jobs/job-response.js'

const STATUSES: readonly JobStatus[] = ['pending', 'running', 'succeeded', 'failed', 'canceled']

function notFound(): ApiError {
  return new ApiError('ai_not_found', 'No job with that id.')
}

export function parseJobId(raw: unknown): number {
  // Past 2^53 Number() would round to some other job's id.
  if (typeof raw !== 'string' || !/^[1-9]\d{0,15}$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw notFound()
  return Number(raw)
}

/** Ownership first, before any cache or If-None-Match handling: another owner's job is a 404. */
export function visibleTo(row: JobRow | undefined, principal: Principal): JobRow {
  if (!row || (row.owner_key !== principal.ownerKey && !principal.isAdmin)) throw notFound()
  return row
}

function ifNoneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false
  return header.split(',').some((tag) => {
    const t = tag.trim()
    return t === '*' || t === etag || t === `W/${etag}`
  })
}

export function encodeCursor(row: JobRow): string {
  return Buffer.from(JSON.stringify([row.created_at, row.id])).toString('base64url')
}

export function decodeCursor(cursor: string): { createdAt: string; id: number } {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown]
    if (typeof createdAt === 'string' && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$/.test(createdAt) && Number.isSafeInteger(id) && (id as number) > 0) {
      return { createdAt, id: id as number }
    }
  } catch {
    // fall through
  }
  throw new ApiError('ai_invalid_request', 'cursor: is not a cursor this API returned', { details: { field: 'cursor', reason: 'malformed' } })
}

export function parseLimit(raw: unknown): number {
  if (raw === undefined) return 20
  if (typeof raw !== 'string' || !/^\d{1,3}$/.test(raw) || Number(raw) < 1 || Number(raw) > 100) {
    throw new ApiError('ai_invalid_request', 'limit: must be a whole number from 1 to 100', { details: { field: 'limit', reason: 'out of range' } })
  }
  return Number(raw)
}

export function parseStatus(raw: unknown): JobStatus | undefined {
  if (raw === undefined) return undefined
  if (typeof raw !== 'string' || !STATUSES.includes(raw as JobStatus)) {
    throw new ApiError('ai_invalid_request', `status: must be one of ${STATUSES.join(', ')}`, { details: { field: 'status', reason: 'unknown status' } })
  }
  return raw as JobStatus
}

/** The job routes of SPEC §4, under `{PUBLIC_URL path}/wp-json/ai/v1`. */
export async function jobRoutes(app: FastifyInstance): Promise<void> {
  const gw = app.gateway
  const jobUrl = (id: number) => `${gw.config.publicUrl}/wp-json/ai/v1/jobs/${id}`
  const principalOf = (request: FastifyRequest) => gw.authenticate(request)

  const sendJob = (reply: FastifyReply, row: JobRow) => {
    reply.header('ETag', jobEtag(row)).header('Cache-Control', 'private, max-age=0')
    return toJobResponse(row)
  }

  app.post('/jobs', async (request, reply) => {
    const principal = await principalOf(request)
    if (!principal.canCreate) throw new ApiError('ai_forbidden', 'You are not allowed to create AI jobs.')
    const headerKey = request.headers['idempotency-key']
    const result = await createJob({
      handle: gw.handle, store: gw.store, clock: gw.clock, rules: gw.rules,
      rateLimitMax: gw.config.rateLimitMax, rateLimitWindowSeconds: gw.config.rateLimitWindowSeconds,
      dedupeWindowSeconds: gw.config.dedupeWindowSeconds, encryptionKey: gw.config.encryptionKey,
    }, principal, request.body, Array.isArray(headerKey) ? headerKey[0] : headerKey, request.id).catch((err: unknown) => {
      if (err instanceof ApiError && err.code === 'ai_rate_limited') gw.metrics.rateLimited.inc()
      throw err
    })
    if (result.kind === 'replayed') {
      gw.metrics.jobsReplayed.inc()
      reply.code(200).header('Idempotent-Replayed', 'true').header('Location', jobUrl(result.row.id))
      return sendJob(reply, result.row)
    }
    gw.metrics.jobsCreated.inc()
    gw.pool.wake()
    gw.events.created()
    if (result.rateLimit) reply.headers(rateLimitHeaders(result.rateLimit))
    reply.code(202).header('Location', jobUrl(result.jobId))
    return { job_id: result.jobId, status: 'pending', request_id: request.id }
  })

  app.get<{ Params: { id: string } }>('/jobs/:id', async (request, reply) => {
    const principal = await principalOf(request)
    const id = parseJobId(request.params.id)
    const started = performance.now()
    const row = visibleTo(await findJob(gw.handle.db, id), principal)
    const dbMs = performance.now() - started
    const timing = [`db;dur=${dbMs.toFixed(1)}`]
    if (row.worker_ms !== null) timing.push(`worker;dur=${row.worker_ms}`)
    if (row.provider_ms !== null) timing.push(`provider;dur=${row.provider_ms}`)
    reply.header('Server-Timing', timing.join(', '))
    const etag = jobEtag(row)
    if (ifNoneMatch(request.headers['if-none-match'], etag)) {
      return reply.code(304).header('ETag', etag).header('Cache-Control', 'private, max-age=0').send()
    }
    return sendJob(reply, row)
  })

  app.get<{ Querystring: Record<string, unknown> }>('/jobs', async (request) => {
    const principal = await principalOf(request)
    const limit = parseLimit(request.query.limit)
    const status = parseStatus(request.query.status)
    const before = typeof request.query.cursor === 'string' && request.query.cursor !== '' ? decodeCursor(request.query.cursor) : undefined
    // One extra row tells whether another page exists without a COUNT.
    const rows = await listJobs(gw.handle.db, { ownerKey: principal.ownerKey, ...(status ? { status } : {}), ...(before ? { before } : {}), limit: limit + 1 })
    const page = rows.slice(0, limit)
    const next = rows.length > limit ? encodeCursor(page[page.length - 1]!) : null
    return { jobs: page.map(toJobResponse), next_cursor: next }
  })

  app.get('/.well-known/jwks.json', async (_request, reply) => {
    reply.header('Cache-Control', 'public, max-age=300')
    return gw.signingKey ? buildJwks(gw.signingKey) : { keys: [] }
  })

  app.post<{ Params: { id: string } }>('/jobs/:id/cancel', async (request, reply) => {
    const principal = await principalOf(request)
    const id = parseJobId(request.params.id)
    visibleTo(await findJob(gw.handle.db, id), principal)
    const { changed, row } = await cancelJob(gw.handle.db, id, gw.clock.now())
    if (!row) throw notFound()
    if (!changed) throw new ApiError('ai_job_finished', `The job has already ${row.status === 'canceled' ? 'been canceled' : row.status}.`)
    // The replica running it (this one or another) aborts the provider call.
    gw.pool.abortJob(id, 'cancel')
    gw.events.canceled(id)
    return sendJob(reply, row)
  })
}
