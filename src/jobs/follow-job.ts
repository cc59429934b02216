import { findJob, type JobRow } from '../db/jobs-repository.js'
import { TERMINAL_STATUSES } from '../db/schema.js'
import { toError } from '../errors.js'
import type { Log } from '../logger.js'
import type { JobDelta } from './job-events.js'
import type { JobWatcher } from './job-watch.js'
import type { JobServices } from './services.js'

export interface FollowServices extends Pick<JobServices, 'db'> {
  jobWatcher: JobWatcher
  log: Log
}

/** The caller stopped waiting (a client that went away). */
export class FollowAborted extends Error {
  constructor() {
    super('stopped following the job')
    this.name = 'FollowAborted'
  }
}

/**
 * Waits for a job to end, through the replica's job watcher (one database read per change,
 * however many callers wait; events from every replica through Redis), handing `onDelta` the
 * job's deltas and resets meanwhile (SPEC §9). Resolves to the terminal row, or `undefined` when
 * the job is gone; rejects with `FollowAborted` when `signal` aborts first. The watch starts
 * before the first read, so a change between the two is never missed; `known`, when given, is a
 * reading the caller already has (a replayed job), and a terminal one ends the wait at once.
 */
export function followJob(services: FollowServices, jobId: number, options: { signal: AbortSignal; onDelta?: (delta: JobDelta) => void; known?: JobRow }): Promise<JobRow | undefined> {
  const { signal, onDelta, known } = options
  if (known && TERMINAL_STATUSES.includes(known.status)) return Promise.resolve(known)
  return new Promise<JobRow | undefined>((resolve, reject) => {
    let done = false
    const end = (settle: () => void) => {
      if (done) return
      done = true
      unwatch()
      signal.removeEventListener('abort', aborted)
      settle()
    }
    const onRow = (row: JobRow | undefined) => {
      if (!row) end(() => resolve(undefined))
      else if (TERMINAL_STATUSES.includes(row.status)) end(() => resolve(row))
    }
    const aborted = () => end(() => reject(new FollowAborted()))
    const unwatch = services.jobWatcher.watch(jobId, {
      row: onRow,
      delta: (delta) => {
        if (!done) onDelta?.(delta)
      },
    })
    if (signal.aborted) return aborted()
    signal.addEventListener('abort', aborted, { once: true })
    // The watcher re-reads watched jobs every few seconds, so a failed first read only delays.
    findJob(services.db.db, jobId).then(onRow, (err: unknown) => {
      services.log.warn({ err: toError(err), job_id: jobId }, 'could not read a followed job; the watcher reads it again')
    })
  })
}
