import type { DatabaseHandle } from '../db/database.js'
import { findJob, type JobRow } from '../db/jobs-repository.js'
import { toError } from '../errors.js'
import type { Log } from '../logger.js'
import type { JobDelta, JobEvents } from './job-events.js'

/** Events normally arrive at once (local, or through Redis); this re-read covers a lost message. */
const RECHECK_MS = 2_000

/** What a stream is handed: every new reading of the job (undefined once it is gone), and its deltas. */
export interface JobListener {
  row(row: JobRow | undefined): void
  delta?(delta: JobDelta): void
}

interface Watched {
  listeners: Set<JobListener>
  reading: boolean
  again: boolean
}

/**
 * The jobs this replica's streams follow. Every change of a watched job is read from the
 * database once, however many streams follow it, and handed to each of them (SPEC §8: one read
 * per change per replica, not per stream). A burst of changes costs at most two reads; a periodic
 * re-read per watched job covers a lost event.
 */
export class JobWatcher {
  private readonly watched = new Map<number, Watched>()
  private readonly offs: (() => void)[]
  private readonly timer: NodeJS.Timeout

  constructor(private readonly db: DatabaseHandle, events: JobEvents, private readonly log: Log, recheckMs = RECHECK_MS) {
    this.offs = [
      events.onChanged((jobId) => {
        if (this.watched.has(jobId)) void this.refresh(jobId)
      }),
      // Deltas fan out from memory to the job's streams here; they never touch the database.
      events.onDelta((delta) => {
        for (const listener of this.watched.get(delta.jobId)?.listeners ?? []) listener.delta?.(delta)
      }),
    ]
    this.timer = setInterval(() => {
      for (const jobId of this.watched.keys()) void this.refresh(jobId)
    }, recheckMs)
    this.timer.unref()
  }

  /** Hands `listener` every new reading of the job and its deltas. Returns the remover. */
  watch(jobId: number, listener: JobListener): () => void {
    let entry = this.watched.get(jobId)
    if (!entry) {
      entry = { listeners: new Set(), reading: false, again: false }
      this.watched.set(jobId, entry)
    }
    entry.listeners.add(listener)
    return () => {
      entry.listeners.delete(listener)
      if (entry.listeners.size === 0 && this.watched.get(jobId) === entry) this.watched.delete(jobId)
    }
  }

  /** How many jobs are watched here (for tests and metrics). */
  get size(): number {
    return this.watched.size
  }

  close(): void {
    clearInterval(this.timer)
    for (const off of this.offs) off()
    this.watched.clear()
  }

  private async refresh(jobId: number): Promise<void> {
    const entry = this.watched.get(jobId)
    if (!entry) return
    if (entry.reading) {
      entry.again = true
      return
    }
    entry.reading = true
    try {
      do {
        entry.again = false
        const row = await findJob(this.db.db, jobId)
        for (const listener of [...entry.listeners]) listener.row(row)
      } while (entry.again && entry.listeners.size > 0)
    } catch (err) {
      this.log.warn({ err: toError(err), jobId }, 'could not read a watched job; will retry')
    } finally {
      entry.reading = false
    }
  }
}
