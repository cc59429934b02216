import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import { claimJobs, newClaimRotation, type JobRow } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { toError } from '../errors.js'
import type { DecisionWriter, JobDecision } from '../jobs/apply-decision.js'
import type { Log } from '../logger.js'
import { LeaseKeeper, type AbortReason, type HeldJob } from './lease-keeper.js'

export type { AbortReason } from './lease-keeper.js'
export type { JobDecision } from '../jobs/apply-decision.js'

export type JobExecutor = (row: JobRow, signal: AbortSignal, abortReason: () => AbortReason | undefined) => Promise<JobDecision>

export interface PoolOptions {
  db: DatabaseHandle
  clock: Clock
  log: Log
  execute: JobExecutor
  /** Writes each job's decision, fenced on this pool's `workerId`. */
  decisions: DecisionWriter
  workerId: string
  concurrency: number
  /** JOB_OWNER_CONCURRENCY: running jobs per owner across all replicas; 0 or absent = no cap. */
  ownerConcurrency?: number
  leaseMs: number
  /** External mode: claims are dispatches and bump `dispatch_attempt`. */
  dispatch?: boolean
  /** The fallback poll; wake-ups normally come at once from creates and from Redis. */
  pollMs?: number
  onError?: (where: string, err: Error) => void
}

interface Running extends HeldJob {
  row: JobRow
  controller: AbortController
  done: Promise<void>
}

/** Tries for a fenced write that hit a database error, with 100 ms, 200 ms, … between them. */
const WRITE_TRIES = 4

/** A worker id unique to this process: `host:pid:random`, the `lease_owner` of its claims. */
export function newWorkerId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
}

/**
 * The in-process worker pool: claims due jobs in batches up to its free slots and runs each
 * through the executor outside any transaction; its lease keeper renews their leases meanwhile.
 * What each job decided is written by the DecisionWriter.
 */
export class WorkerPool {
  readonly workerId: string
  private readonly running = new Map<number, Running>()
  private pollTimer: NodeJS.Timeout | undefined
  private readonly leases: LeaseKeeper
  private filling: Promise<void> | undefined
  private wakeAgain = false
  private wakeScheduled = false
  private stopping = false
  private started = false
  private claimFailures = 0
  private claimPausedUntil = 0
  /** Where this pool's turn of owners stands, from one claim to the next (SPEC §8). */
  private readonly rotation = newClaimRotation()

  constructor(private readonly options: PoolOptions) {
    this.workerId = options.workerId
    this.leases = new LeaseKeeper({
      db: options.db, clock: options.clock, log: options.log, leaseOwner: options.workerId, leaseMs: options.leaseMs,
      held: () => this.running,
      abort: (id, reason) => this.abortJob(id, reason),
      onError: (err) => this.report('heartbeat', err),
    })
  }

  get size(): number {
    return this.running.size
  }

  get isRunning(): boolean {
    return this.started && !this.stopping
  }

  runningIds(): number[] {
    return [...this.running.keys()]
  }

  start(): void {
    if (this.started || this.options.concurrency <= 0) return
    this.started = true
    this.pollTimer = setInterval(() => this.wake(), this.options.pollMs ?? 500)
    this.pollTimer.unref()
    this.leases.start()
    this.wake()
  }

  /** Claims at once; coalesces wake-ups that arrive while a claim round is under way. */
  wake(): void {
    if (!this.started || this.stopping) return
    if (this.filling) {
      this.wakeAgain = true
      return
    }
    this.filling = this.fill().finally(() => {
      this.filling = undefined
    })
  }

  /**
   * A wake-up once this turn of the event loop is over: the jobs of one written batch end
   * together, and their slots are then claimed in one round instead of the first slot alone.
   */
  private wakeSoon(): void {
    if (this.wakeScheduled) return
    this.wakeScheduled = true
    setImmediate(() => {
      this.wakeScheduled = false
      this.wake()
    })
  }

  /** Claims one batch and waits for those jobs to finish. For tests and tools; needs no start(). */
  async runOnce(): Promise<number> {
    const rows = await this.claim()
    await Promise.all(rows.map((row) => this.launch(row).done))
    return rows.length
  }

  /** One heartbeat now (tests drive it with an injected clock). */
  renewLeases(): Promise<void> {
    return this.leases.beat()
  }

  /** Aborts a job running here (a cancel seen through the API or an event). */
  abortJob(jobId: number, reason: AbortReason): boolean {
    const job = this.running.get(jobId)
    if (!job) return false
    job.reason ??= reason
    job.controller.abort(new Error(`job ${reason}`))
    return true
  }

  /**
   * SIGTERM: stop claiming, give running jobs `graceMs` to finish, then abort the rest and
   * release them to `pending` without spending an attempt.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true
    clearInterval(this.pollTimer)
    this.pollTimer = undefined
    // A claim already in flight still launches what it took; wait for it so those jobs are
    // counted below instead of running on after the database is closed.
    await this.filling
    const all = () => Promise.all([...this.running.values()].map((r) => r.done))
    let timer: NodeJS.Timeout | undefined
    const graceOver = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs)
    })
    try {
      const first = await Promise.race([all().then(() => 'done' as const), graceOver])
      if (first === 'timeout') {
        for (const id of this.running.keys()) this.abortJob(id, 'shutdown')
        await all()
      }
      // Every job above waited for its own result to be written; nothing may be left queued.
      await this.options.decisions.drain()
    } finally {
      clearTimeout(timer)
      // The heartbeat ran through the grace period: a grace longer than the lease must not let
      // another replica's reaper take a job that is still running here.
      this.leases.stop()
    }
  }

  private async fill(): Promise<void> {
    do {
      this.wakeAgain = false
      const free = this.options.concurrency - this.running.size
      if (free <= 0 || this.stopping) break
      const rows = await this.claim(free)
      for (const row of rows) this.launch(row)
      // A full batch means more may be waiting; so does a wake-up that arrived meanwhile.
      if (rows.length === free) this.wakeAgain = true
    } while (this.wakeAgain && !this.stopping)
  }

  private async claim(limit = this.options.concurrency - this.running.size): Promise<JobRow[]> {
    const now = this.options.clock.now()
    if (now < this.claimPausedUntil) return []
    try {
      const rows = await claimJobs(this.options.db, {
        limit, nowMs: now, leaseOwner: this.workerId, leaseMs: this.options.leaseMs, dispatch: this.options.dispatch === true,
        ownerConcurrency: this.options.ownerConcurrency ?? 0, rotation: this.rotation,
      })
      this.claimFailures = 0
      return rows
    } catch (err) {
      // The database is down or busy: back off (up to 5 s) and let the poll try again.
      this.claimFailures++
      this.claimPausedUntil = now + Math.min(5_000, 100 * 2 ** this.claimFailures)
      this.report('claim', err)
      return []
    }
  }

  private launch(row: JobRow): Running {
    const controller = new AbortController()
    const leaseUntil = row.lease_expires_at ? fromDbTime(row.lease_expires_at) : this.options.clock.now() + this.options.leaseMs
    const entry: Running = { row, controller, reason: undefined, done: Promise.resolve(), leaseUntil, requestId: row.request_id }
    this.running.set(row.id, entry)
    entry.done = this.execute(entry).finally(() => {
      this.running.delete(row.id)
      this.wakeSoon()
    })
    return entry
  }

  private async execute(entry: Running): Promise<void> {
    const { row, controller } = entry
    let decision: JobDecision
    try {
      decision = await this.options.execute(row, controller.signal, () => entry.reason)
    } catch (err) {
      // Any throw must still release the job: an executor bug counts as a failed attempt.
      decision = { kind: 'retry', errorText: `worker error: ${toError(err).message}` }
    }
    // A call cut short by the shutdown may have ended as an error: that is not the provider's
    // fault, so the attempt is given back. A finished (or accepted, or dropped) job stays as it is.
    if (entry.reason === 'shutdown' && decision.kind === 'retry') {
      decision = { kind: 'release', runAfterMs: this.options.clock.now(), reason: 'shutdown', ...(decision.usage ? { usage: decision.usage } : {}) }
    }
    // The lease stays renewed while this runs (the job is still in `running`), so a short database
    // outage does not cost a provider call that already succeeded.
    for (let tryIndex = 0; ; tryIndex++) {
      try {
        await this.options.decisions.apply(row, decision)
        return
      } catch (err) {
        if (tryIndex + 1 >= WRITE_TRIES) {
          // Still failing: the lease will expire and the reaper returns the job to the queue.
          this.report(`write job ${row.id}`, err, { job_id: row.id, request_id: row.request_id })
          return
        }
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** tryIndex))
      }
    }
  }

  private report(where: string, err: unknown, job?: { job_id: number; request_id: string }): void {
    const e = toError(err)
    this.options.onError?.(where, e)
    this.options.log.warn({ err: e, where, ...job }, 'worker pool error')
  }
}
