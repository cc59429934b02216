import { findJob, retryJob as retryJobRow, type JobRow } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'
import { notFound } from './read-job.js'
import type { JobServices } from './services.js'

/**
 * The admin retry (SPEC §4): the one way a terminal job runs again. Its attempts start over and it
 * is `pending` at once; every pool is woken. Its dispatch number keeps counting (see claimJobs).
 */
export async function retryJob(services: Pick<JobServices, 'db' | 'clock' | 'pool' | 'jobEvents'>, id: number): Promise<JobRow> {
  const before = await findJob(services.db.db, id)
  if (!before) throw notFound()
  if (!(await retryJobRow(services.db.db, id, services.clock.now()))) {
    throw new ApiError('ai_job_finished', `Only a finished job can be retried; this one is ${before.status}.`)
  }
  services.pool.wake()
  services.jobEvents.created()
  services.jobEvents.changed(id)
  const after = await findJob(services.db.db, id)
  if (!after) throw notFound()
  return after
}
