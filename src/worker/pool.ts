import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import {
  claimJobs, finishJob, finishJobs, markDispatched, reapExpiredLeases, renewLeases, requeueJob, type JobRow, type Outcome,
} from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { toError } from '../errors.js'
import { jobBackoffMs } from './backoff.js'
import { FinishBatcher } from './finish-batcher.js'

/** Why a running job's AbortSignal fired. */
export type AbortReason = 'cancel' | 'shutdown' | 'lease_lost'

/**
 * What running one claimed job decided. The pool writes it, fenced on the lease, so the executor
 * never touches the database itself.
 */
export type JobDecision =
  | { kind: 'finish'; outcome: Outcome }
  /**
   * A retryable failure: the attempt is spent and the job runs again after the job-level backoff,
   * or after `retryAfterMs` when the provider asked for longer; `failed` once attempts run out.
   */
  | { kind: 'retry'; errorText: string; resultJson?: string | null; retryAfterMs?: number }
  /** Put back without spending the attempt (an open breaker, shutdown), not before `runAfterMs`. */
  | { kind: 'release'; runAfterMs: number; reason: string }
  /** External mode: the worker accepted the job; it stays `running` until its webhook or `waitMs`. */
  | { kind: 'dispatched'; waitMs: number }
  /** Nothing to write: the job was canceled or its lease is gone. */
  | { kind: 'drop'; reason: string }

export type JobExecutor = (row: JobRow, signal: AbortSignal, abortReason: () => AbortReason | undefined) => Promise<JobDecision>

export interface PoolOptions {
  handle: DatabaseHandle
  clock: Clock
  logger: Logger
  execute: JobExecutor
  concurrency: number
  leaseMs: number
  maxAttempts: number
  /** External mode: claims are dispatches and bump `dispatch_attempt`. */
  dispatch?: boolean
  /** The fallback poll; wake-ups normally come at once from creates and from Redis. */
  pollMs?: number
  reapEveryMs?: number
  /** Called after every state change the pool writes, so caches and streams can follow. */
  onChange?: (jobId: number) => void
  onError?: (where: string, err: Error) => void
}

interface Running {
  row: JobRow
  controller: AbortController
  reason: AbortReason | undefined
  done: Promise<void>
  /** Until when the lease is known to be ours: set by the claim, moved by each renewal. */
  leaseUntil: number
}

/** Tries for a fenced write that hit a database error, with 100 ms, 200 ms, … between them. */
const WRITE_TRIES = 4

/**
 * The in-process worker pool: claims due jobs in batches up to its free slots, runs each through
 * the executor outside any transaction, renews their leases while they run, and returns expired
 * leases of dead workers to the queue.
 */
export class WorkerPool {
  readonly workerId = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
  private readonly running = new Map<number, Running>()
  private timers: NodeJS.Timeout[] = []
  /** Kept apart from `timers`: leases must be renewed until the last running job is written. */
  private heartbeatTimer: NodeJS.Timeout | undefined
  private filling: Promise<void> | undefined
  private wakeAgain = false
  private wakeScheduled = false
  private stopping = false
  private started = false
  private claimFailures = 0
  private claimPausedUntil = 0
  /**
   * Terminal outcomes are written in batches (one fenced statement for the jobs finishing within
   * a couple of milliseconds of each other); each job still waits for its own row's answer.
   */
  private readonly finisher: FinishBatcher

  constructor(private readonly options: PoolOptions) {
    const { handle, clock } = options
    this.finisher = new FinishBatcher({
      writeBatch: (items) => finishJobs(handle, this.workerId, items, clock.now()),
      writeOne: (item) => finishJob(handle.db, item.id, this.workerId, item.outcome, clock.now()),
    })
  }

  /** Three renewals per lease: one missed heartbeat is survived, two are not. */
  private get heartbeatMs(): number {
    return Math.max(100, Math.floor(this.options.leaseMs / 3))
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
    const { pollMs = 500, reapEveryMs = 5_000 } = this.options
    this.timers.push(setInterval(() => this.wake(), pollMs))
    this.timers.push(setInterval(() => void this.reap(), reapEveryMs))
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.heartbeatMs)
    for (const t of [...this.timers, this.heartbeatTimer]) t.unref()
    void this.reap()
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
    for (const t of this.timers) clearInterval(t)
    this.timers = []
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
      await this.finisher.drain()
    } finally {
      clearTimeout(timer)
      // The heartbeat ran through the grace period: a grace longer than the lease must not let
      // another replica's reaper take a job that is still running here.
      clearInterval(this.heartbeatTimer)
      this.heartbeatTimer = undefined
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
      const rows = await claimJobs(this.options.handle, { limit, nowMs: now, leaseOwner: this.workerId, leaseMs: this.options.leaseMs, dispatch: this.options.dispatch === true })
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
    const entry: Running = { row, controller, reason: undefined, done: Promise.resolve(), leaseUntil }
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
      decision = { kind: 'release', runAfterMs: this.options.clock.now(), reason: 'shutdown' }
    }
    // The lease stays renewed while this runs (the job is still in `running`), so a short database
    // outage does not cost a provider call that already succeeded.
    for (let tryIndex = 0; ; tryIndex++) {
      try {
        await this.write(row, decision)
        return
      } catch (err) {
        if (tryIndex + 1 >= WRITE_TRIES) {
          // Still failing: the lease will expire and the reaper returns the job to the queue.
          this.report(`write job ${row.id}`, err)
          return
        }
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** tryIndex))
      }
    }
  }

  private async write(row: JobRow, decision: JobDecision): Promise<void> {
    const { handle, clock, logger, maxAttempts } = this.options
    const now = clock.now()
    let written = false
    switch (decision.kind) {
      case 'finish':
        // Batched: written with the other jobs finishing now, at the time of that write.
        written = await this.finisher.finish(row.id, decision.outcome)
        break
      case 'retry': {
        if (row.attempts >= maxAttempts) {
          written = await this.finisher.finish(row.id, {
            status: 'failed', resultJson: decision.resultJson ?? null,
            errorText: `${decision.errorText} (gave up after ${row.attempts} attempts)`,
            providerMs: null, workerMs: null, inputTokens: null, outputTokens: null,
          })
        } else {
          const waitMs = Math.max(jobBackoffMs(row.attempts, clock.random()), decision.retryAfterMs ?? 0)
          written = await requeueJob(handle.db, row.id, this.workerId, {
            runAfterMs: now + waitMs, errorText: decision.errorText, refundAttempt: false,
          }, now)
        }
        break
      }
      case 'release':
        // Not an attempt: an open breaker, a failed dispatch or shutdown. The reason is worth a line.
        logger.info({ jobId: row.id, reason: decision.reason, runAfter: new Date(decision.runAfterMs).toISOString() }, 'job put back without spending an attempt')
        written = await requeueJob(handle.db, row.id, this.workerId, { runAfterMs: decision.runAfterMs, errorText: row.error_text, refundAttempt: true }, now)
        break
      case 'dispatched':
        written = await markDispatched(handle.db, row.id, this.workerId, now, decision.waitMs)
        break
      case 'drop':
        logger.info({ jobId: row.id, reason: decision.reason }, 'job result dropped')
        return
    }
    if (written) {
      this.options.onChange?.(row.id)
    } else if (decision.kind === 'dispatched') {
      // The worker's webhook arrived before its own 2xx: the job is already final.
      logger.info({ jobId: row.id }, 'job finished by its webhook before the dispatch was recorded')
    } else {
      // Zero rows: the lease moved on (expired and re-claimed, or the job was canceled).
      logger.warn({ jobId: row.id, decision: decision.kind }, 'job no longer held by this worker; result dropped')
    }
  }

  private async heartbeat(): Promise<void> {
    const { clock, leaseMs } = this.options
    const now = clock.now()
    // A lease that could not be renewed (the database is down or hangs) passes to any replica
    // once it runs out. Stop our copy while some of it is left, before the next heartbeat would
    // be too late, so no job runs twice at once. Nothing is written: the reaper returns the job.
    const margin = Math.min(this.heartbeatMs * 1.5, leaseMs / 2)
    for (const [id, job] of this.running) {
      if (job.reason === undefined && job.leaseUntil - now <= margin) {
        this.options.logger.warn({ jobId: id, leaseLeftMs: job.leaseUntil - now }, 'lease could not be renewed in time; stopping the job here')
        this.abortJob(id, 'lease_lost')
      }
    }
    const ids = [...this.running].filter(([, job]) => job.reason === undefined).map(([id]) => id)
    if (ids.length === 0) return
    try {
      const lost = new Set(await renewLeases(this.options.handle.db, ids, this.workerId, now, leaseMs))
      for (const id of ids) {
        const job = this.running.get(id)
        if (!job) continue
        if (lost.has(id)) this.abortJob(id, 'lease_lost')
        else job.leaseUntil = now + leaseMs
      }
    } catch (err) {
      this.report('heartbeat', err)
    }
  }

  private async reap(): Promise<void> {
    const { handle, clock, maxAttempts } = this.options
    try {
      const r = await reapExpiredLeases(handle.db, clock.now(), {
        maxAttempts,
        backoffMs: (attempts) => jobBackoffMs(attempts, clock.random()),
      })
      if (r.requeued + r.failed > 0) {
        this.options.logger.warn(r, 'expired leases returned to the queue')
        this.wake()
      }
    } catch (err) {
      this.report('reaper', err)
    }
  }

  private report(where: string, err: unknown): void {
    const e = toError(err)
    this.options.onError?.(where, e)
    this.options.logger.warn({ err: e, where }, 'worker pool error')
  }
}
