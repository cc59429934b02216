import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import type { Budgets } from '../budgets/budgets.js'
import { chargeAttempt, findJob, finishJobs, markDispatched, requeueJob, type FinishItem, type JobRow, type Outcome } from '../db/jobs-repository.js'
import type { Settlement } from '../db/usage-repository.js'
import type { Log } from '../logger.js'
import type { LargeResults } from '../results/large-results.js'
import { jobBackoffMs } from '../worker/backoff.js'
import { FinishBatcher } from '../worker/finish-batcher.js'
import type { AttemptUsage } from '../providers/types.js'

export type { AttemptUsage, CallUsage } from '../providers/types.js'

/**
 * What running one claimed job decided. It is written here, fenced on the lease, so an executor
 * never touches the database itself.
 *
 * `usage`, on the decisions that follow provider calls, is what every call of the attempt cost
 * (retries, broken streams and fallbacks included), each at its own model, for the budgets to
 * settle (SPEC §8). It is not written to the row: `input_tokens`/`output_tokens` there stay the
 * answering call's usage.
 */
export type JobDecision =
  | { kind: 'finish'; outcome: Outcome; usage?: AttemptUsage }
  /**
   * A retryable failure: the attempt is spent and the job runs again after the job-level backoff,
   * or after `retryAfterMs` when the provider asked for longer; `failed` once attempts run out.
   */
  | { kind: 'retry'; errorText: string; resultJson?: string | null; retryAfterMs?: number; usage?: AttemptUsage }
  /** Put back without spending the attempt (an open breaker, shutdown), not before `runAfterMs`. */
  | { kind: 'release'; runAfterMs: number; reason: string; usage?: AttemptUsage }
  /** External mode: the worker accepted the job; it stays `running` until its webhook or `waitMs`. */
  | { kind: 'dispatched'; waitMs: number }
  /** Nothing to write: the job was canceled or its lease is gone (the calls made still cost `usage`). */
  | { kind: 'drop'; reason: string; usage?: AttemptUsage }

export interface DecisionWriterOptions {
  db: DatabaseHandle
  clock: Clock
  log: Log
  /** The pool's worker id: every write is fenced on `lease_owner` = this. */
  leaseOwner: string
  maxAttempts: number
  /** External mode: a released job gives its dispatch number back with its attempt. */
  dispatch?: boolean
  /** After every write that changed the row, so streams and other replicas follow. */
  onWritten?: (jobId: number, decision: JobDecision['kind']) => void
  /** Token budgets: every terminal write settles the job's reservation (SPEC §8). */
  budgets?: Budgets | undefined
  /** Every decision that followed provider calls, for the token metrics. */
  onUsage?: (usage: AttemptUsage) => void
  /** Results over RESULT_INLINE_MAX_BYTES are stored here before the row is written (SPEC §12). */
  results?: LargeResults | undefined
  /** Events to WordPress are on: every terminal write adds its outbox row in the same transaction (SPEC §10). */
  events?: boolean
}

/**
 * What every log line about a job carries: its id, and the request id of the POST that created it,
 * so a job's lines join the request's.
 */
export function jobLog(row: Pick<JobRow, 'id' | 'request_id'>): { job_id: number; request_id: string } {
  return { job_id: Number(row.id), request_id: row.request_id }
}

/**
 * What an attempt's calls cost, in tokens (SPEC §8): each call's reported input and output, or,
 * for a call that answered without usage, the job's reservation (never 0).
 */
export function attemptTokens(usage: AttemptUsage | undefined, reservation: number): number {
  if (!usage) return 0
  return usage.calls.reduce((n, call) => n + (call.reported ? call.input_tokens + call.output_tokens : reservation), 0)
}

/**
 * Applies a worker's decision to its job: the one place the pool's results become rows. Terminal
 * outcomes are written in batches (one fenced statement for the jobs finishing within a couple of
 * milliseconds of each other), and each job still learns whether its own row was written.
 */
export class DecisionWriter {
  private readonly finisher: FinishBatcher

  constructor(private readonly options: DecisionWriterOptions) {
    const { db, clock, leaseOwner } = options
    const events = options.events === true
    this.finisher = new FinishBatcher({
      writeBatch: (items) => finishJobs(db, leaseOwner, items, clock.now(), events),
      writeOne: async (item: FinishItem) => (await finishJobs(db, leaseOwner, [item], clock.now(), events)).has(item.id),
    })
  }

  /** The usage table's part of a job's end: everything its attempts cost, this one included. */
  private settlement(row: JobRow, tokens: number, usage: AttemptUsage | undefined): Settlement | undefined {
    if (!this.options.budgets) return undefined
    return { ownerKey: row.owner_key, userId: Number(row.user_id), createdAt: row.created_at, tokens: Number(row.billed_tokens) + tokens, unmeteredCalls: usage?.unmetered ?? 0, jobs: 1 }
  }

  /** Writes a terminal outcome (batched) and, once it is committed, settles the store's counters. */
  private async finish(row: JobRow, outcome: Outcome, usage: AttemptUsage | undefined): Promise<boolean> {
    const tokens = attemptTokens(usage, Number(row.reserved_tokens))
    const settlement = this.settlement(row, tokens, usage)
    const { results } = this.options
    // A large result is durable in the store before the row names it (SPEC §12).
    const placed = results ? await results.place(row, outcome.resultJson) : { resultJson: outcome.resultJson, resultRef: null }
    let written: boolean
    try {
      written = await this.finisher.finish(row.id, { ...outcome, ...placed, billedTokens: tokens }, settlement)
    } catch (err) {
      await results?.discardUnlessNamed(placed.resultRef, async () => (await findJob(this.options.db.db, row.id))?.result_ref, jobLog(row))
      throw err
    }
    // Not written: no row names the new file. Written over an older stored result: that one is named no more.
    if (!written) await results?.discard(placed.resultRef, 'the lease moved on', jobLog(row))
    else if (row.result_ref && row.result_ref !== placed.resultRef) await results?.discard(row.result_ref, 'replaced', jobLog(row))
    if (written && settlement) {
      await this.options.budgets!.settled([{ ownerKey: row.owner_key, userId: Number(row.user_id), createdAt: row.created_at, reserved: Number(row.reserved_tokens), billed: settlement.tokens }])
    }
    return written
  }

  /** Writes one decision; throws on a database error (the caller retries). */
  async apply(row: JobRow, decision: JobDecision): Promise<void> {
    const { db, clock, log, leaseOwner, maxAttempts } = this.options
    const now = clock.now()
    const usage = 'usage' in decision ? decision.usage : undefined
    if (usage) this.options.onUsage?.(usage)
    const billedTokens = attemptTokens(usage, Number(row.reserved_tokens))
    let written = false
    switch (decision.kind) {
      case 'finish':
        // Batched: written with the other jobs finishing now, at the time of that write.
        written = await this.finish(row, decision.outcome, usage)
        break
      case 'retry': {
        if (row.attempts >= maxAttempts) {
          written = await this.finish(row, {
            status: 'failed', resultJson: decision.resultJson ?? null,
            errorText: `${decision.errorText} (gave up after ${row.attempts} attempts)`,
            providerMs: null, workerMs: null, inputTokens: null, outputTokens: null,
          }, usage)
        } else {
          const waitMs = Math.max(jobBackoffMs(row.attempts, clock.random()), decision.retryAfterMs ?? 0)
          written = await requeueJob(db.db, row.id, leaseOwner, {
            runAfterMs: now + waitMs, errorText: decision.errorText, refundAttempt: false, billedTokens,
          }, now)
        }
        break
      }
      case 'release':
        // Not an attempt: an open breaker, a failed dispatch or shutdown. The reason is worth a line.
        log.info({ ...jobLog(row), reason: decision.reason, runAfter: new Date(decision.runAfterMs).toISOString() }, 'job put back without spending an attempt')
        written = await requeueJob(db.db, row.id, leaseOwner, {
          runAfterMs: decision.runAfterMs, errorText: row.error_text, refundAttempt: true, refundDispatch: this.options.dispatch === true, billedTokens,
        }, now)
        break
      case 'dispatched':
        written = await markDispatched(db.db, row.id, leaseOwner, now, decision.waitMs)
        break
      case 'drop': {
        log.info({ ...jobLog(row), reason: decision.reason }, 'job result dropped')
        // Canceled (or taken over) mid-call: what the calls cost is still the job's.
        const late = await chargeAttempt(db, row.id, billedTokens, usage?.unmetered ?? 0, this.options.budgets !== undefined)
        if (late) await this.options.budgets?.settled([late])
        return
      }
    }
    if (written) {
      this.options.onWritten?.(row.id, decision.kind)
    } else if (decision.kind === 'dispatched') {
      // The worker's webhook arrived before its own 2xx: the job is already final.
      log.info(jobLog(row), 'job finished by its webhook before the dispatch was recorded')
    } else {
      // Zero rows: the lease moved on (expired and re-claimed, or the job was canceled).
      log.warn({ ...jobLog(row), decision: decision.kind }, 'job no longer held by this worker; result dropped')
    }
  }

  /** Writes whatever is queued and waits for every write under way. */
  drain(): Promise<void> {
    return this.finisher.drain()
  }
}
