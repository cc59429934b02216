import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { findJob } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'
import { jobIdOf } from '../jobs/read-job.js'
import { errorResponses, JobIdParams } from '../schemas/common.js'

const ResultLinkQuery = Type.Object({
  exp: Type.String({ pattern: '^[0-9]{1,12}$', description: 'unix seconds the link is valid until', 'x-error': 'must be unix seconds' }),
  sig: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$', description: 'base64url HMAC-SHA256 over id, version and exp', 'x-error': 'must be a result link signature' }),
})

function refused(message: string): ApiError {
  return new ApiError('ai_invalid_signature', message)
}

/**
 * `GET /jobs/:id/result?exp=…&sig=…` (SPEC §12): a result stored outside the table, by the
 * signed link in the job's `result_url`. The signature alone authorizes it (no login), so the
 * link can be handed to a download. A link for another job or an older version of this one, a
 * changed `exp` or `sig`, or an expired link: `403 ai_invalid_signature`; a job that no longer
 * exists is refused the same way, so a link tells nothing about other ids.
 */
export async function jobResultRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.get('/jobs/:id/result', {
    config: { auth: 'none' },
    schema: {
      summary: 'Download a result stored outside the table',
      description: 'The `result_url` of a job whose result is over RESULT_INLINE_MAX_BYTES. Needs no login: the link\'s signature authorizes it until its `exp`.',
      tags: ['jobs'],
      params: JobIdParams,
      querystring: ResultLinkQuery,
      response: {
        200: { description: 'The result, as JSON', content: { 'application/json': { schema: { description: 'any JSON value' } } } },
        ...errorResponses,
      },
    },
  }, async (request, reply) => {
    const id = jobIdOf(request.params.id)
    const exp = Number(request.query.exp)
    const row = await findJob(app.db.db, id)
    // The check runs whether or not the row exists, so its time says nothing about other ids.
    const valid = app.resultLinks.verify(row ?? { id, version: 0 }, exp, request.query.sig)
    if (!row || !valid || row.result_ref === null) throw refused('The result link is not valid for this job; read the job again for its current result_url.')
    const nowS = Math.floor(app.clock.now() / 1000)
    if (exp <= nowS) throw refused('The result link has expired; read the job again for a fresh result_url.')
    const stored = await app.results.store.open(row.result_ref)
    if (!stored) throw new ApiError('ai_not_found', 'The stored result is no longer there.')
    return reply
      .header('Content-Type', 'application/json; charset=utf-8')
      .header('Content-Length', String(stored.size))
      // Never shared: the link is a credential. Cacheable by its holder until the link expires.
      .header('Cache-Control', `private, max-age=${exp - nowS}`)
      .header('X-Content-Type-Options', 'nosniff')
      .send(stored.body)
  })
}
