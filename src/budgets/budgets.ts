import type { Principal } from '../auth/principal.js'
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import type { Transaction } from 'kysely'
import type { Settled } from '../db/jobs-repository.js'
import type { Database } from '../db/schema.js'
import { fromDbTime } from '../db/time.js'
import { lockBudget, reservedTokens, settledTokens, topReserved, topUsage, unlockBudgets } from '../db/usage-repository.js'
import { ApiError } from '../errors.js'
import type { JobRequest } from '../jobs/job-request.js'
import type { Log } from '../logger.js'
import type { Metrics } from '../metrics.js'
import type { BudgetCounter, Store } from '../store/types.js'
import { limitsFor, type BudgetLimit, type BudgetsConfig, type BudgetWindow } from './config.js'

/** One window of one scope as it stands (SPEC §8 `data.budget` and `GET /usage`). */
export interface BudgetStanding {
  scope: string
  window: BudgetWindow
  limit: number
  used: number
  reserved: number
  /** ISO-8601 UTC: when the window starts over. */
  resets_at: string
}

/** A limit at one moment: its UTC period and the counter that holds it. */
export interface BudgetCounterRef extends BudgetLimit {
  /** `bud:<owner | site>:<d | m>:<period>` */
  key: string
  /** `YYYY-MM-DD` or `YYYY-MM`. */
  period: string
  startMs: number
  endMs: number
}

/**
 * Counters are re-read from the database at least this often: a bound on how long anything the
 * store missed (a settlement during a Redis outage, a counter lost to eviction) can stay wrong.
 */
const COUNTER_TTL_MS = 60 * 60_000

/** The UTC day or month holding `atMs`: its label, start and end. */
export function periodOf(window: BudgetWindow, atMs: number): { period: string; startMs: number; endMs: number } {
  const d = new Date(atMs)
  if (window === 'day') {
    const startMs = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())
    return { period: new Date(startMs).toISOString().slice(0, 10), startMs, endMs: startMs + 86_400_000 }
  }
  const startMs = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)
  return { period: new Date(startMs).toISOString().slice(0, 7), startMs, endMs: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) }
}

/** The input's estimated tokens (UTF-8 bytes / 4, rounded up), as SPEC §8 reserves them. */
export function estimateInputTokens(request: Pick<JobRequest, 'input' | 'messages'>): number {
  const text = request.input ?? (request.messages ?? []).map((m) => m.content).join('\n')
  return Math.ceil(Buffer.byteLength(text) / 4)
}

export function budgetExhausted(standing: BudgetStanding, nowMs: number): ApiError {
  const retryAfter = Math.max(1, Math.ceil((Date.parse(standing.resets_at) - nowMs) / 1000))
  return new ApiError('ai_budget_exhausted', `The ${standing.window === 'day' ? 'daily' : 'monthly'} token budget (${standing.scope}) is used up until ${standing.resets_at}.`, {
    headers: { 'Retry-After': String(retryAfter) },
    details: { budget: standing },
  })
}

export interface BudgetsOptions {
  config: BudgetsConfig
  db: DatabaseHandle
  store: Store
  clock: Clock
  log: Log
  metrics: Metrics
}

/**
 * Token budgets (SPEC §8): a create reserves its worst case on every counter that limits it, and
 * its end settles the reservation to what the provider calls cost. Counters live in the store
 * (Redis: atomic across replicas) as the tokens used and reserved per scope and window; the
 * database holds the truth they are rebuilt from (`{prefix}ai_usage` and the open jobs'
 * `reserved_tokens`), settled in the same transaction as each job's end. With Redis down the
 * checks run in the database under a lock: slower, never looser.
 */
export class Budgets {
  /**
   * Counters that changed in the database while the store could not follow (Redis down): they
   * are forgotten once the store answers again, so they are loaded afresh.
   */
  private readonly stale = new Set<string>()

  constructor(private readonly options: BudgetsOptions) {}

  /** The limits that hold for a principal's create at `atMs`, with their counters. */
  countersFor(principal: Pick<Principal, 'userId' | 'ownerKey' | 'roles'>, atMs: number): BudgetCounterRef[] {
    return limitsFor(this.options.config, principal).map((limit) => this.counterRef(limit, principal.ownerKey, atMs))
  }

  /** The counters a job created at `createdAtMs` by `ownerKey` is settled on (every window it may count in). */
  private settleKeys(ownerKey: string, createdAtMs: number): string[] {
    const keys: string[] = []
    for (const window of ['day', 'month'] as const) {
      const { period } = periodOf(window, createdAtMs)
      keys.push(`bud:${ownerKey}:${window[0]}:${period}`, `bud:site:${window[0]}:${period}`)
    }
    return keys
  }

  private counterRef(limit: BudgetLimit, ownerKey: string, atMs: number): BudgetCounterRef {
    const p = periodOf(limit.window, atMs)
    const who = limit.per === 'site' ? 'site' : ownerKey
    return { ...limit, ...p, key: `bud:${who}:${limit.window[0]}:${p.period}` }
  }

  standing(ref: BudgetCounterRef, counter: BudgetCounter): BudgetStanding {
    return { scope: ref.scope, window: ref.window, limit: ref.limit, used: counter.used, reserved: counter.reserved, resets_at: new Date(ref.endMs).toISOString() }
  }

  /** A counter as the database has it: tokens settled in its period, and reserved by open jobs. */
  async loadCounter(ref: BudgetCounterRef, ownerKey: string): Promise<BudgetCounter> {
    const db = this.options.db.db
    const owner = ref.per === 'site' ? undefined : ownerKey
    const fromDay = new Date(ref.startMs).toISOString().slice(0, 10)
    const toDay = new Date(ref.endMs).toISOString().slice(0, 10)
    const [used, reserved] = await Promise.all([settledTokens(db, owner, fromDay, toDay), reservedTokens(db, owner, ref.startMs, ref.endMs)])
    return { used, reserved }
  }

  /** Loads counters the store does not hold (another replica may have loaded them meanwhile: it keeps its own). */
  async rebuild(refs: BudgetCounterRef[], ownerKey: string): Promise<void> {
    const counters = await Promise.all(refs.map(async (ref) => ({ key: ref.key, counter: await this.loadCounter(ref, ownerKey), ttlMs: COUNTER_TTL_MS })))
    await this.options.store.initBudgets(counters)
  }

  /**
   * Creates a job's row while the store cannot count (Redis down): the counters' names are locked
   * in the database, the limits checked against what it holds, and the row inserted in the same
   * transaction, so concurrent creates on any replica are never let past a limit.
   */
  async insertChecked(refs: BudgetCounterRef[], ownerKey: string, amount: number, insert: (trx: Transaction<Database>) => Promise<number>): Promise<number> {
    const handle = this.options.db
    const names = [...new Set(refs.map((r) => r.key))].sort()
    // The named locks belong to the connection, and are released only after the transaction
    // committed: the next create reads this one's reservation.
    const id = await handle.db.connection().execute(async (conn) => {
      try {
        for (const name of names) await lockBudget(handle, conn, name)
        return await conn.transaction().execute(async (trx) => {
          for (const ref of refs) {
            const owner = ref.per === 'site' ? undefined : ownerKey
            const fromDay = new Date(ref.startMs).toISOString().slice(0, 10)
            const toDay = new Date(ref.endMs).toISOString().slice(0, 10)
            const counter = { used: await settledTokens(trx, owner, fromDay, toDay), reserved: await reservedTokens(trx, owner, ref.startMs, ref.endMs) }
            if (counter.used + counter.reserved + amount > ref.limit) {
              this.refused(ref)
              throw budgetExhausted(this.standing(ref, counter), this.options.clock.now())
            }
          }
          return insert(trx)
        })
      } finally {
        await unlockBudgets(handle, conn, names).catch(() => {})
      }
    })
    // The store, once back, must not keep counters that miss this reservation.
    for (const ref of refs) this.stale.add(ref.key)
    return id
  }

  refused(ref: BudgetCounterRef): void {
    this.options.metrics.budgetRefusals.inc({ scope: ref.scope.split(':')[0]! })
  }

  /**
   * After a job's end was committed (its reservation released and its cost added to the usage
   * table): the same on the counters the store holds. Counters it cannot reach now are forgotten
   * as soon as it answers again.
   */
  async settled(entries: readonly Settled[]): Promise<void> {
    const changes: { key: string; used: number; reserved: number }[] = []
    for (const e of entries) {
      const at = fromDbTime(e.createdAt)
      for (const key of this.settleKeys(e.ownerKey, at)) changes.push({ key, used: e.billed, reserved: -e.reserved })
    }
    if (changes.length === 0) return
    try {
      await this.forgetStale()
      await this.options.store.adjustBudgets(changes)
    } catch (err) {
      for (const c of changes) this.stale.add(c.key)
      this.options.log.warn({ err }, 'budget counters could not follow a settlement; they are reloaded from the database once the store answers')
    }
  }

  /**
   * Moves a job's reservation on the store's counters by `delta`: taken again (an admin retry,
   * positive) or given back (a create that failed after it reserved, negative).
   */
  async adjustReserved(ownerKey: string, createdAtMs: number, delta: number): Promise<void> {
    if (delta === 0) return
    // settled() releases `reserved`; a negative release takes.
    await this.settled([{ ownerKey, userId: 0, createdAt: new Date(createdAtMs).toISOString().replace('T', ' ').slice(0, 23), reserved: -delta, billed: 0 }])
  }

  /** Drops the counters the store missed changes of, now that it answers. */
  async forgetStale(): Promise<void> {
    if (this.stale.size === 0) return
    const keys = [...this.stale]
    await this.options.store.dropBudgets(keys)
    for (const key of keys) this.stale.delete(key)
  }

  /** `GET /usage`: every window that limits the caller, with what is used and reserved now. */
  async usage(principal: Pick<Principal, 'userId' | 'ownerKey' | 'roles'>): Promise<BudgetStanding[]> {
    const refs = this.countersFor(principal, this.options.clock.now())
    let held: (BudgetCounter | undefined)[] = []
    try {
      await this.forgetStale()
      held = await this.options.store.readBudgets(refs.map((r) => r.key))
    } catch {
      held = []
    }
    return Promise.all(refs.map(async (ref, i) => this.standing(ref, held[i] ?? await this.loadCounter(ref, principal.ownerKey))))
  }

  /**
   * The admin page's budget chart: the WordPress users closest to a limit in the current day and
   * month, at most `count`, by (used + reserved) / limit. `rolesOf` reads a user's roles (their
   * limits may follow them); windows that do not limit a user are left out.
   */
  async topUsers(count: number, rolesOf?: (userId: number) => Promise<readonly string[] | undefined>): Promise<{ user_id: number; scope: string; window: BudgetWindow; limit: number | null; used: number; reserved: number }[]> {
    const now = this.options.clock.now()
    const db = this.options.db.db
    const out: { user_id: number; scope: string; window: BudgetWindow; limit: number | null; used: number; reserved: number }[] = []
    for (const window of ['day', 'month'] as const) {
      const p = periodOf(window, now)
      const fromDay = new Date(p.startMs).toISOString().slice(0, 10)
      const toDay = new Date(p.endMs).toISOString().slice(0, 10)
      const [used, reserved] = await Promise.all([topUsage(db, fromDay, toDay, count * 5), topReserved(db, p.startMs, p.endMs, count * 5)])
      const owners = new Map<string, { userId: number; used: number; reserved: number }>()
      for (const r of used) owners.set(r.ownerKey, { userId: r.userId, used: r.tokens, reserved: 0 })
      for (const r of reserved) owners.set(r.ownerKey, { userId: r.userId, used: owners.get(r.ownerKey)?.used ?? 0, reserved: r.tokens })
      for (const o of owners.values()) {
        const roles = rolesOf ? await rolesOf(o.userId).catch(() => undefined) : undefined
        const limit = limitsFor(this.options.config, { userId: o.userId, ...(roles ? { roles } : {}) }).find((l) => l.per === 'owner' && l.window === window)
        // A window that does not limit the user is no budget to show.
        if (limit) out.push({ user_id: o.userId, scope: limit.scope, window, limit: limit.limit, used: o.used, reserved: o.reserved })
      }
    }
    const share = (u: { limit: number | null; used: number; reserved: number }) => (u.limit ? (u.used + u.reserved) / u.limit : 0)
    return out.sort((x, y) => share(y) - share(x) || (y.used + y.reserved) - (x.used + x.reserved)).slice(0, count)
  }
}
