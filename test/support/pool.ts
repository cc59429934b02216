import { pino } from 'pino'
import type { Clock } from '../../src/clock.js'
import type { DatabaseHandle } from '../../src/db/database.js'
import { DecisionWriter } from '../../src/jobs/apply-decision.js'
import type { Log } from '../../src/logger.js'
import { newWorkerId, WorkerPool, type JobExecutor } from '../../src/worker/pool.js'
import { Reaper } from '../../src/worker/reaper.js'

export interface TestPoolOptions {
  handle: DatabaseHandle
  clock: Clock
  logger?: Log
  execute: JobExecutor
  concurrency: number
  /** JOB_OWNER_CONCURRENCY (0 or absent: no cap). */
  ownerConcurrency?: number
  leaseMs: number
  maxAttempts: number
  pollMs?: number
  reapEveryMs?: number
  dispatch?: boolean
  /** After each write the pool's decisions made. */
  onChange?: (jobId: number) => void
}

/**
 * A pool as the pool plugin composes it (decision writer, lease keeper, reaper), outside any app:
 * start() starts the reaper with it and stop() stops both.
 */
export class TestPool extends WorkerPool {
  readonly reaper: Reaper

  constructor(o: TestPoolOptions) {
    const log = o.logger ?? pino({ level: 'silent' })
    const workerId = newWorkerId()
    const decisions = new DecisionWriter({
      db: o.handle, clock: o.clock, log, leaseOwner: workerId, maxAttempts: o.maxAttempts, dispatch: o.dispatch === true,
      ...(o.onChange ? { onWritten: (id: number) => o.onChange!(id) } : {}),
    })
    super({
      db: o.handle, clock: o.clock, log, execute: o.execute, decisions, workerId, dispatch: o.dispatch === true,
      concurrency: o.concurrency, ...(o.ownerConcurrency !== undefined ? { ownerConcurrency: o.ownerConcurrency } : {}), leaseMs: o.leaseMs, ...(o.pollMs !== undefined ? { pollMs: o.pollMs } : {}),
    })
    this.reaper = new Reaper({ db: o.handle, clock: o.clock, log, maxAttempts: o.maxAttempts, everyMs: o.reapEveryMs ?? 5_000, onReaped: () => this.wake() })
  }

  override start(): void {
    super.start()
    this.reaper.start()
  }

  override async stop(graceMs: number): Promise<void> {
    this.reaper.stop()
    await super.stop(graceMs)
  }
}
