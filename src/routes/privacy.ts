import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { eraseUser, exportUserPage } from '../lifecycle/privacy.js'
import { ApiError } from '../errors.js'
import { errorResponses } from '../schemas/common.js'
import { EraseBody, EraseReport, ExportPage, ExportQuery, UserIdParams } from '../schemas/privacy.js'

const SIGNED = 'Or, in place of the admin login, signed server to server the Standard Webhooks way with AI_EVENTS_SECRET (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature` over the exact body, "" for a GET); each webhook-id is accepted once. The companion plugin calls it so.'

/** The user id of the path: a WordPress user (from 1); 0 stands for every visitor, which is nobody's data to hand over. */
function userIdOf(raw: string): number {
  if (raw === '0') throw new ApiError('ai_invalid_request', 'id: user 0 stands for every visitor; export and erase take a WordPress user id', { details: { field: 'id', reason: 'not a WordPress user' } })
  if (!/^[1-9][0-9]{0,15}$/.test(raw)) throw new ApiError('ai_not_found', 'No user with that id.')
  return Number(raw)
}

/**
 * The privacy routes (SPEC §12), for WordPress's personal-data exporter and eraser: the admin
 * capability, or a call signed with AI_EVENTS_SECRET (auth `admin-or-signed`, the only routes
 * that take such a signature).
 */
export async function privacyRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.get('/admin/users/:id/export', {
    config: { auth: 'admin-or-signed', noStore: true },
    schema: {
      summary: "A page of a user's jobs, for the personal-data export", tags: ['admin', 'privacy'],
      description: `Each job JSON with user_id, the request the user sent (opened when encrypted) and its metadata, oldest first; \`done\` is true on the last page. ${SIGNED}`,
      params: UserIdParams,
      querystring: ExportQuery,
      response: { 200: ExportPage, ...errorResponses },
    },
  }, async (request) => {
    const { page = 1, per_page: perPage = 100 } = request.query
    return exportUserPage(app.db, app.config.encryptionKeys, userIdOf(request.params.id), page, perPage, app.lifecycle.hooks)
  })

  app.post('/admin/users/:id/erase', {
    config: { auth: 'admin-or-signed', noStore: true },
    schema: {
      summary: "Erase a user's jobs, stored results and archived lines", tags: ['admin', 'privacy'],
      description: `Deletes the user's jobs in batches, their stored results and their lines in archive files. One call does a bounded amount of work: \`done: false\` means call again. \`{prefix}ai_usage\` (spent tokens) is kept. ${SIGNED}`,
      params: UserIdParams,
      body: EraseBody,
      response: { 200: EraseReport, ...errorResponses },
    },
  }, async (request) => {
    const report = await eraseUser(app.db, userIdOf(request.params.id), app.lifecycle.hooks)
    request.log.info({ user_id: report.user_id, jobs_erased: report.jobs_erased, results_erased: report.results_erased, archive_lines_erased: report.archive_lines_erased, done: report.done, by: request.principal.method }, 'privacy: user erased')
    if (report.archive_files_missing > 0) request.log.warn({ missing: report.archive_files_missing }, 'privacy: archive files listed in the database are not on this host; erase them where they are (npm run privacy -- erase)')
    return report
  })
}
