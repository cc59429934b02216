import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import { renewLeases } from '../db/jobs-repository.js'
import type { Log } from '../logger.js'

/** Why a running job's AbortSignal fired. */
export type AbortReason = 'cancel' | 'shutdown' | 'lease_lost'

/** What the lease keeper needs to know of a job running here. */
export interface HeldJob {
  /** Until when the lease is known to be ours: set by the claim, moved by each renewal. */
  leaseUntil: number
  /** Set once the job was told to stop; such a job is no longer renewed. */
  reason: AbortReason | undefined
  /** The request id of the POST that created the job, for its log lines. */
  requestId: string
}

export interface LeaseKeeperOptions {
  db: DatabaseHandle
  clock: Clock
  log: Log
  leaseOwner: string
  leaseMs: number
  /** The jobs running here now. */
  held: () => ReadonlyMap<number, HeldJob>
  /** Stops a job that lost its lease (or is about to). */
  abort: (jobId: number, reason: AbortReason) => void
  onError?: (err: unknown) => void
}

/**
 * Renews the leases of the jobs running here, three times per lease so one missed heartbeat is
 * survived and two are not, and stops a job whose lease was lost, or could not be renewed in
 * time, before anyone else may take it: no job runs twice at once.
 */
export class LeaseKeeper {
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly options: LeaseKeeperOptions) {}

  get heartbeatMs(): number {
    return Math.max(100, Math.floor(this.options.leaseMs / 3))
  }

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => void this.beat(), this.heartbeatMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** One heartbeat; never throws. */
  async beat(): Promise<void> {
    const { clock, leaseMs, log } = this.options
    const now = clock.now()
    // A lease that could not be renewed (the database is down or hangs) passes to any replica
    // once it runs out. Stop our copy while some of it is left, before the next heartbeat would
    // be too late. Nothing is written: the reaper returns the job.
    const margin = Math.min(this.heartbeatMs * 1.5, leaseMs / 2)
    for (const [id, job] of this.options.held()) {
      if (job.reason === undefined && job.leaseUntil - now <= margin) {
        log.warn({ job_id: id, request_id: job.requestId, leaseLeftMs: job.leaseUntil - now }, 'lease could not be renewed in time; stopping the job here')
        this.options.abort(id, 'lease_lost')
      }
    }
    const ids = [...this.options.held()].filter(([, job]) => job.reason === undefined).map(([id]) => id)
    if (ids.length === 0) return
    try {
      const lost = new Set(await renewLeases(this.options.db.db, ids, this.options.leaseOwner, now, leaseMs))
      const held = this.options.held()
      for (const id of ids) {
        const job = held.get(id)
        if (!job) continue
        if (lost.has(id)) this.options.abort(id, 'lease_lost')
        else job.leaseUntil = now + leaseMs
      }
    } catch (err) {
      this.options.onError?.(err)
    }
  }
}
