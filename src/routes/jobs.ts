import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyReply } from 'fastify'
import Type from 'typebox'
import { listJobs, type JobRow } from '../db/jobs-repository.js'
import { cancelJob } from '../jobs/cancel-job.js'
import { createJob, mayCreate } from '../jobs/create-job.js'
import { rateLimitHeaders } from '../jobs/rate-limit.js'
import { jobEtag, toJobResponse } from '../jobs/job-response.js'
import { jobIdOf, readVisibleJob } from '../jobs/read-job.js'
import { errorResponses, JobIdParams } from '../schemas/common.js'
import { CreateJobBody, CreateJobHeaders, JobAccepted, JobList, ListJobsQuery } from '../schemas/job.js'
import { decodeCursor, page } from './cursor.js'
import { ifNoneMatch } from './etag.js'

const JobRef = Type.Ref('Job')

/** The job routes of SPEC §4, under `{PUBLIC_URL path}/wp-json/ai/v1`. HTTP only: the lifecycle is in jobs/. */
export async function jobRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const jobUrl = (id: number) => `${app.config.publicUrl}/wp-json/ai/v1/jobs/${id}`
  const sendJob = (reply: FastifyReply, row: JobRow) => {
    const link = app.resultLinks.forRow(row)
    reply.header('ETag', jobEtag(row, link)).header('Cache-Control', 'private, max-age=0')
    return toJobResponse(row, link)
  }

  app.post('/jobs', {
    config: { auth: 'user' },
    schema: {
      summary: 'Create a job',
      description: 'Answers 202 with the new job, or 200 with the existing job for a replayed idempotency key or a duplicate inside the dedupe window (Idempotent-Replayed: true).',
      tags: ['jobs'],
      headers: CreateJobHeaders,
      body: CreateJobBody,
      response: { 200: JobRef, 202: JobAccepted, ...errorResponses },
    },
  }, async (request, reply) => {
    await mayCreate(request.principal)
    const result = await createJob(app, request.principal, {
      body: request.body, headerKey: request.headers['idempotency-key'], requestId: request.id, clientIp: request.ip,
    })
    if (result.kind === 'replayed') {
      reply.code(200).header('Idempotent-Replayed', 'true').header('Location', jobUrl(result.row.id))
      return sendJob(reply, result.row)
    }
    if (result.rateLimit) reply.headers(rateLimitHeaders(result.rateLimit))
    reply.code(202).header('Location', jobUrl(result.jobId))
    return { job_id: result.jobId, status: 'pending' as const, request_id: request.id }
  })

  app.get('/jobs/:id', {
    config: { auth: 'user' },
    schema: {
      summary: 'Read a job',
      description: 'The ETag follows the job\'s version; If-None-Match answers 304 while nothing changed.',
      tags: ['jobs'],
      params: JobIdParams,
      headers: Type.Object({ 'if-none-match': Type.Optional(Type.String()) }),
      response: { 200: JobRef, 304: Type.Null({ description: 'Not modified' }), ...errorResponses },
    },
  }, async (request, reply) => {
    const started = performance.now()
    const row = await readVisibleJob(app, request.principal, jobIdOf(request.params.id))
    const timing = [`db;dur=${(performance.now() - started).toFixed(1)}`]
    if (row.worker_ms !== null) timing.push(`worker;dur=${row.worker_ms}`)
    if (row.provider_ms !== null) timing.push(`provider;dur=${row.provider_ms}`)
    reply.header('Server-Timing', timing.join(', '))
    // One link for the tag and the body: both name the same `exp`.
    const link = app.resultLinks.forRow(row)
    const etag = jobEtag(row, link)
    if (ifNoneMatch(request.headers['if-none-match'], etag)) {
      return reply.code(304).header('ETag', etag).header('Cache-Control', 'private, max-age=0').send()
    }
    reply.header('ETag', etag).header('Cache-Control', 'private, max-age=0')
    return toJobResponse(row, link)
  })

  app.get('/jobs', {
    config: { auth: 'user', noStore: true },
    schema: {
      summary: 'List your jobs',
      description: 'The caller\'s own jobs, newest first, by cursor pages.',
      tags: ['jobs'],
      querystring: ListJobsQuery,
      response: { 200: JobList, ...errorResponses },
    },
  }, async (request) => {
    const { status, cursor } = request.query
    const limit = request.query.limit ?? 20
    const before = cursor ? decodeCursor(cursor) : undefined
    const rows = await listJobs(app.db.db, {
      ownerKey: request.principal.ownerKey, limit: limit + 1,
      ...(status ? { status } : {}), ...(before ? { before } : {}),
    })
    const shown = page(rows, limit)
    return { jobs: shown.rows.map((row) => toJobResponse(row, app.resultLinks.forRow(row))), next_cursor: shown.nextCursor }
  })

  app.post('/jobs/:id/cancel', {
    config: { auth: 'user' },
    schema: {
      summary: 'Cancel a job',
      description: 'A pending or running job becomes canceled and a running provider call is aborted; a finished job is a 409.',
      tags: ['jobs'],
      params: JobIdParams,
      body: Type.Union([Type.Null(), Type.Object({})], { description: 'no body is needed' }),
      response: { 200: JobRef, ...errorResponses },
    },
  }, async (request, reply) => sendJob(reply, await cancelJob(app, request.principal, jobIdOf(request.params.id))))
}
