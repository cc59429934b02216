import type { Principal } from '../auth/principal.js'
import { findJob, type JobRow } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'
import type { JobServices } from './services.js'

export function notFound(): ApiError {
  return new ApiError('ai_not_found', 'No job with that id.')
}

/**
 * A job id from a path that passed its schema (1–16 digits): past 2^53 `Number()` would round
 * to some other job's id, so such an id names no job.
 */
export function jobIdOf(raw: string): number {
  const id = Number(raw)
  if (!Number.isSafeInteger(id)) throw notFound()
  return id
}

/** Ownership first, before any cache or If-None-Match handling: another owner's job is a 404. */
export function visibleTo(row: JobRow | undefined, principal: Principal): JobRow {
  if (!row || (row.owner_key !== principal.ownerKey && !principal.isAdmin)) throw notFound()
  return row
}

/**
 * The job as its owner (or an admin) may see it, or a 404. Before another owner's job is refused,
 * a principal whose admin capability came from cached rows is checked again (SPEC §5: caches may
 * delay a revocation, never a grant).
 */
export async function readVisibleJob(services: Pick<JobServices, 'db'>, principal: Principal, id: number): Promise<JobRow> {
  const row = await findJob(services.db.db, id)
  if (row && row.owner_key !== principal.ownerKey && !principal.isAdmin && principal.recheck) {
    return visibleTo(row, await principal.recheck())
  }
  return visibleTo(row, principal)
}
