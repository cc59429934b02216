import type { Budgets } from '../budgets/budgets.js'
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import { reapExpiredLeases, type ReapResult } from '../db/jobs-repository.js'
import type { Log } from '../logger.js'
import { jobBackoffMs } from './backoff.js'

export interface ReaperOptions {
  db: DatabaseHandle
  clock: Clock
  log: Log
  maxAttempts: number
  everyMs: number
  /** The jobs a round moved (requeued or failed), so pools claim and streams follow. */
  onReaped?: (ids: number[]) => void
  /** Token budgets: a job failed here is settled (SPEC §8). */
  budgets?: Budgets | undefined
  /** Events to WordPress are on: a job failed here gets its outbox row in the same transaction. */
  events?: boolean
  onError?: (err: unknown) => void
}

/**
 * Returns expired leases (a worker that died or stalled) to the queue on every replica, so a
 * process killed with `kill -9` loses nothing (SPEC §6). Apart from the pool that claims, as
 * river keeps its rescuer apart from its producer.
 */
export class Reaper {
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly options: ReaperOptions) {}

  start(): void {
    if (this.timer) return
    this.timer = setInterval(() => void this.runOnce(), this.options.everyMs)
    this.timer.unref()
    void this.runOnce()
  }

  stop(): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /** One round; never throws (errors go to `onError`). */
  async runOnce(): Promise<ReapResult | undefined> {
    const { db, clock, maxAttempts, log } = this.options
    try {
      const r = await reapExpiredLeases(db.db, clock.now(), {
        maxAttempts, backoffMs: (attempts) => jobBackoffMs(attempts, clock.random()), ...(this.options.budgets ? { settle: db } : {}), events: this.options.events === true,
      })
      if (r.settled.length > 0) await this.options.budgets?.settled(r.settled)
      if (r.ids.length > 0) {
        log.warn({ requeued: r.requeued, failed: r.failed }, 'expired leases returned to the queue')
        this.options.onReaped?.(r.ids)
      }
      return r
    } catch (err) {
      this.options.onError?.(err)
      return undefined
    }
  }
}
