import { findJob, retryJob as retryJobRow, type JobRow } from '../db/jobs-repository.js'
import { estimateInputTokens } from '../budgets/budgets.js'
import { fromDbTime } from '../db/time.js'
import { ApiError } from '../errors.js'
import type { JobRequest } from './job-request.js'
import { openRequest } from './request-crypto.js'
import { notFound } from './read-job.js'
import type { JobServices } from './services.js'

/**
 * The admin retry (SPEC §4): the one way a terminal job runs again. Its attempts start over and it
 * is `pending` at once; every pool is woken. Its dispatch number keeps counting (see claimJobs).
 * Its result goes, a stored one included.
 */
export async function retryJob(services: Pick<JobServices, 'db' | 'clock' | 'pool' | 'jobEvents' | 'budgets' | 'config' | 'requestRules' | 'results'>, id: number): Promise<JobRow> {
  const before = await findJob(services.db.db, id)
  if (!before) throw notFound()
  // Its new run reserves its worst case again (SPEC §8), counted in its created_at's windows; an
  // admin's retry is never refused for it.
  const reserve = services.budgets ? reservationOf(services, before) : 0
  if (!(await retryJobRow(services.db.db, id, services.clock.now(), reserve))) {
    throw new ApiError('ai_job_finished', `Only a finished job can be retried; this one is ${before.status}.`)
  }
  if (reserve > 0) await services.budgets?.adjustReserved(before.owner_key, fromDbTime(before.created_at), reserve)
  // The retry cleared the row's result; a stored one is named by no row now. (A terminal row
  // changes only by a retry: at worst two racing retries leave one orphan file, never a row
  // naming a deleted one.)
  await services.results.discard(before.result_ref, 'the job was retried', { job_id: id })
  services.pool.wake()
  services.jobEvents.created()
  services.jobEvents.changed(id)
  const after = await findJob(services.db.db, id)
  if (!after) throw notFound()
  return after
}

/** The worst case the job's request can cost, as a create reserves it; 0 when the request cannot be read. */
function reservationOf(services: Pick<JobServices, 'config' | 'requestRules'>, row: JobRow): number {
  try {
    const request = JSON.parse(openRequest(row.request_json, services.config.encryptionKeys, row.idempotency_key)) as JobRequest
    return estimateInputTokens(request) + (request.params?.max_tokens ?? services.requestRules.maxTokensFor(row.model || request.model))
  } catch {
    return 0
  }
}
