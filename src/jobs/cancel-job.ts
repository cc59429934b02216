import type { Principal } from '../auth/principal.js'
import { cancelJob as cancelJobRow, cancelJobSettled, type JobRow } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'
import { notFound, readVisibleJob } from './read-job.js'
import type { JobServices } from './services.js'

/**
 * Cancels a pending or running job for its owner or an admin (SPEC §4): the row becomes
 * `canceled`, and the replica running it (this one, or another through the cancel event) aborts
 * the provider call. A terminal job is a 409.
 */
export async function cancelJob(services: Pick<JobServices, 'db' | 'clock' | 'pool' | 'jobEvents' | 'budgets' | 'config'>, principal: Principal, id: number): Promise<JobRow> {
  await readVisibleJob(services, principal, id)
  // With events to WordPress, the cancel's outbox row commits with it (SPEC §10).
  const events = services.config.eventsUrl !== undefined
  // With budgets the reservation is released and what was spent so far settled, in one transaction.
  const { changed, row, settled }: Awaited<ReturnType<typeof cancelJobSettled>> = services.budgets
    ? await cancelJobSettled(services.db, id, services.clock.now(), events)
    : await cancelJobRow(services.db.db, id, services.clock.now(), events)
  if (settled) await services.budgets?.settled([settled])
  if (!row) throw notFound()
  if (!changed) throw new ApiError('ai_job_finished', `The job has already ${row.status === 'canceled' ? 'been canceled' : row.status}.`)
  services.pool.abortJob(id, 'cancel')
  services.jobEvents.canceled(id)
  return row
}
