import { CompiledQuery, sql, type Insertable, type Kysely, type Selectable, type Transaction, type WhereInterface } from 'kysely'
import type { DatabaseHandle } from './database.js'
import { recordTerminalEvents } from './events-repository.js'
import { addUsage, type Settlement } from './usage-repository.js'
import { JOB_PRIORITY, type Database, type DbTime, type JobStatus, type JobsTable } from './schema.js'
import { toDbTime } from './time.js'

/**
 * All SQL on `{prefix}ai_jobs`. Small functions that take the database (or a transaction) first
 * and return a row or `undefined`; callers turn `undefined` into a 404.
 */
export type JobRow = Selectable<JobsTable>
export type NewJob = Insertable<JobsTable>
type Db = Kysely<Database> | Transaction<Database>

const bump = sql<number>`version + 1`

/**
 * Runs `fn` in a transaction: `db` itself when it is one already, a new one otherwise. Terminal
 * transitions use it to write their event to WordPress (SPEC §10) in the same commit as the job.
 */
function inTransaction<T>(db: Db, fn: (trx: Db) => Promise<T>): Promise<T> {
  return db.isTransaction ? fn(db) : (db as Kysely<Database>).transaction().execute(fn)
}

/**
 * The fence every write after a claim carries (STYLE "Every write after a claim is fenced"): the
 * row is still `running` under this worker's lease. Zero rows changed means someone else owns the
 * job now (a cancel, the reaper, another worker), and the caller drops what it meant to write.
 */
export function heldBy(ids: number | readonly number[], leaseOwner: string) {
  return <QB extends WhereInterface<Database, 'ai_jobs'>>(qb: QB): QB => {
    const byId = typeof ids === 'number' ? qb.where('id', '=', ids) : qb.where('id', 'in', ids)
    return byId.where('status', '=', 'running').where('lease_owner', '=', leaseOwner) as QB
  }
}

export async function insertJob(db: Db, job: NewJob): Promise<number> {
  const result = await db.insertInto('ai_jobs').values(job).executeTakeFirstOrThrow()
  // Kysely reports insertId as a bigint; ids stay far below 2^53 and the API returns numbers.
  return Number(result.insertId)
}

/** The columns a create writes, in the order `insertJobs` binds them. */
const INSERT_COLUMNS = ['user_id', 'owner_key', 'status', 'input_hash', 'request_json', 'idempotency_key', 'model', 'request_id', 'created_at', 'updated_at', 'run_after', 'reserved_tokens', 'priority'] as const
export type NewJobRow = Pick<NewJob, (typeof INSERT_COLUMNS)[number]>

const insertSql = new Map<string, string>()
/** The INSERT text for `rows` rows, built once per size and dialect (the hot path skips the query builder). */
function insertStatement(handle: DatabaseHandle, rows: number): string {
  const cacheKey = `${handle.prefix}:${handle.dialect}:${handle.insertReturning}:${rows}`
  let text = insertSql.get(cacheKey)
  if (!text) {
    const q = handle.dialect === 'mysql' ? '`' : '"'
    const tuple = `(${INSERT_COLUMNS.map(() => '?').join(', ')})`
    text = `INSERT INTO ${q}${handle.prefix}ai_jobs${q} (${INSERT_COLUMNS.join(', ')}) VALUES ${Array(rows).fill(tuple).join(', ')}`
      + (handle.insertReturning ? ' RETURNING id, idempotency_key' : '')
    insertSql.set(cacheKey, text)
  }
  return text
}

/**
 * Many creates in one multi-row INSERT: one statement, one commit. Resolves to each row's id by
 * its idempotency key. MariaDB and SQLite say which id each row got (`RETURNING`); MySQL 8 does
 * not, so its rows are found again by their unique keys. One bad or duplicate row fails the whole
 * statement and writes nothing; the caller then inserts the rows one by one.
 */
export async function insertJobs(handle: DatabaseHandle, jobs: readonly NewJobRow[]): Promise<Map<string, number>> {
  const params: unknown[] = []
  for (const job of jobs) for (const column of INSERT_COLUMNS) params.push(column === 'reserved_tokens' || column === 'priority' ? job[column] ?? 0 : job[column])
  const result = await handle.db.executeQuery<{ id: number; idempotency_key: string }>(CompiledQuery.raw(insertStatement(handle, jobs.length), params))
  const rows = handle.insertReturning
    ? result.rows
    : await handle.db.selectFrom('ai_jobs').select(['id', 'idempotency_key']).where('idempotency_key', 'in', jobs.map((j) => j.idempotency_key)).execute()
  return new Map(rows.map((r) => [r.idempotency_key, Number(r.id)]))
}

export async function findJob(db: Db, id: number): Promise<JobRow | undefined> {
  return db.selectFrom('ai_jobs').selectAll().where('id', '=', id).executeTakeFirst()
}

export async function findJobByKey(db: Db, idempotencyKey: string): Promise<JobRow | undefined> {
  return db.selectFrom('ai_jobs').selectAll().where('idempotency_key', '=', idempotencyKey).executeTakeFirst()
}

export interface ListFilter {
  ownerKey?: string
  userId?: number
  status?: JobStatus
  model?: string
  createdFromMs?: number
  createdToMs?: number
  /** Keyset cursor: rows strictly older than this (created_at, id). */
  before?: { createdAt: string; id: number }
  limit: number
}

/** Newest first by (created_at, id), paginated by keyset so deep pages stay cheap. */
export async function listJobs(db: Db, filter: ListFilter): Promise<JobRow[]> {
  let q = db.selectFrom('ai_jobs').selectAll()
  if (filter.ownerKey !== undefined) q = q.where('owner_key', '=', filter.ownerKey)
  if (filter.userId !== undefined) q = q.where('user_id', '=', filter.userId)
  if (filter.status !== undefined) q = q.where('status', '=', filter.status)
  if (filter.model !== undefined) q = q.where('model', '=', filter.model)
  if (filter.createdFromMs !== undefined) q = q.where('created_at', '>=', toDbTime(filter.createdFromMs))
  if (filter.createdToMs !== undefined) q = q.where('created_at', '<', toDbTime(filter.createdToMs))
  const before = filter.before
  if (before) {
    q = q.where((eb) => eb.or([
      eb('created_at', '<', before.createdAt),
      eb.and([eb('created_at', '=', before.createdAt), eb('id', '<', before.id)]),
    ]))
  }
  return q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute()
}

export interface ClaimOptions {
  limit: number
  nowMs: number
  leaseOwner: string
  leaseMs: number
  /** External mode: each claim is a dispatch; `dispatch_attempt` becomes the claim's attempt number. */
  dispatch?: boolean
  /** JOB_OWNER_CONCURRENCY: running jobs per owner across all replicas; 0 or absent = no cap. */
  ownerConcurrency?: number
  /** Where this claimer's round of owners stands; kept by the pool from one claim to the next. */
  rotation?: ClaimRotation
}

/**
 * The owner each priority's last claim served last, in the order of the `fair_claim` index: the
 * next claim starts after it, so owners take turns however many there are.
 */
export interface ClaimRotation {
  after: [interactive: string | undefined, bulk: string | undefined]
  /**
   * Per priority, each owner's successor as the walks of earlier claims saw them in index order
   * (`''` stands for the start of the index). A claim reads the owners they name in one statement
   * of ranges (batchedWalkQuery) instead of a statement per owner; what it sees corrects them.
   */
  next: [Map<string, string>, Map<string, string>]
}

export function newClaimRotation(): ClaimRotation {
  return { after: [undefined, undefined], next: [new Map(), new Map()] }
}

/** Successor links kept per priority at most: past it they start over (visitor ids come and go). */
const OWNER_LINKS_MAX = 10_000

/** Index entries one owner-walk statement reads at most (or one owner's share of the claim, if larger). */
export const OWNER_SCAN_ROWS = 32
/** Owner-walk statements one priority may run in one claim (each reads at most OWNER_SCAN_ROWS entries). */
export const OWNER_SCAN_STATEMENTS = 48
/** Rows of `{prefix}ai_claim_locks` (migration 0005). */
export const CLAIM_LOCK_ROWS = 256
/** Rounds one claimJobs call may run when another replica took some of the jobs it picked. */
const CLAIM_ROUNDS = 3

/**
 * One step of the owner walk: the next pending entries of one priority, owner by owner, each
 * owner's oldest `run_after` first. It reads the `fair_claim (status, priority, owner_key,
 * run_after, id)` index in order and stops after `limit` entries; the next step starts after the
 * last owner it saw, so an owner with a thousand queued jobs costs one step, not a thousand rows.
 * `upTo` bounds the wrapped-around part of the walk. Exported so a test can EXPLAIN it.
 */
export function ownerWalkQuery(db: Db, priority: number, after: string | undefined, upTo: string | undefined, limit = OWNER_SCAN_ROWS) {
  let q = db.selectFrom('ai_jobs').select(['owner_key', 'id', 'run_after'])
    .where('status', '=', 'pending').where('priority', '=', priority)
  if (after !== undefined) q = q.where('owner_key', '>', after)
  if (upTo !== undefined) q = q.where('owner_key', '<=', upTo)
  return q.orderBy('owner_key').orderBy('run_after').orderBy('id').limit(limit)
}

/**
 * Several owner-walk steps in one statement (MySQL): branch `i` reads the owners in
 * `(bounds[i], bounds[i + 1]]` (no lower bound for `undefined`; none past `ceiling`), at most
 * `limit` entries, on the same `fair_claim` ranges as ownerWalkQuery. Each row says its branch. Exported so a test can
 * EXPLAIN it.
 */
export function batchedWalkQuery(db: Db, priority: number, bounds: readonly (string | undefined)[], limit: number, ceiling?: string) {
  // The branches are built without the table-prefix plugin: the statement they are joined into
  // is executed through `db`, which adds the prefix once, to all of them.
  const bare = db.withoutPlugins()
  const branches = bounds.slice(1).map((upTo, i) => {
    let q = bare.selectFrom('ai_jobs').select(['owner_key', 'id', 'run_after', sql<number>`${sql.lit(i)}`.as('branch')])
      .where('status', '=', 'pending').where('priority', '=', priority)
    const after = bounds[i]
    if (after !== undefined) q = q.where('owner_key', '>', after)
    if (ceiling !== undefined) q = q.where('owner_key', '<=', ceiling)
    return q.where('owner_key', '<=', upTo!).orderBy('owner_key').orderBy('run_after').orderBy('id').limit(limit)
  })
  return sql<{ owner_key: string; id: number; run_after: DbTime; branch: number }>`${sql.join(branches, sql` UNION ALL `)}`
}

/**
 * Running jobs of these owners, per priority and owner (summed by the caller): a range of
 * `fair_claim` per (priority, owner), in index order. Dispatched jobs in external mode stay
 * `running` until their webhook, so they count. Exported so a test can EXPLAIN it.
 */
export function runningByOwnerQuery(db: Db, ownerKeys: readonly string[]) {
  return db.selectFrom('ai_jobs').select(['priority', 'owner_key', sql<number>`COUNT(*)`.as('n')])
    .where('status', '=', 'running').where('priority', 'in', [JOB_PRIORITY.interactive, JOB_PRIORITY.bulk]).where('owner_key', 'in', ownerKeys)
    .groupBy(['priority', 'owner_key'])
}

/** The picked jobs, by primary key, still pending and due. Exported so a test can EXPLAIN it (with FOR UPDATE SKIP LOCKED). */
export function pickedJobsQuery(db: Db, ids: readonly number[], nowMs: number) {
  return db.selectFrom('ai_jobs').select('id').where('id', 'in', ids).where('status', '=', 'pending').where('run_after', '<=', toDbTime(nowMs))
}

/** The owners' rows of `{prefix}ai_claim_locks`, by primary key. Exported so a test can EXPLAIN it (with FOR UPDATE). */
export function claimLocksQuery(db: Db, buckets: readonly number[]) {
  return db.selectFrom('ai_claim_locks').select('bucket').where('bucket', 'in', buckets).orderBy('bucket')
}

/**
 * How the claim tells owners apart. MySQL compares `owner_key` under the table's
 * case-insensitive collation, so two visitor ids differing only in case are one owner to its
 * counts (they share a cap); SQLite compares bytes.
 */
function ownerIdentity(dialect: DatabaseHandle['dialect'], ownerKey: string): string {
  return dialect === 'mysql' ? ownerKey.toLowerCase() : ownerKey
}

/** The `{prefix}ai_claim_locks` row an owner maps to (FNV-1a of its identity). */
export function claimLockOf(identity: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < identity.length; i++) h = Math.imul(h ^ identity.charCodeAt(i), 0x01000193)
  return (h >>> 0) % CLAIM_LOCK_ROWS
}

interface OwnerCandidates {
  ownerKey: string
  identity: string
  /** Due pending ids, oldest first, as many as the owner could take. */
  ids: number[]
}

/**
 * Walks the owners of one priority that have pending jobs, in index order starting after
 * `start` and wrapping around to it, a step at a time. `complete` once every owner was seen.
 */
class OwnerWalk {
  private after: string | undefined
  private upTo: string | undefined
  private wrapped: boolean
  private statements = 0
  /** Owners this walk has read, so a chain of links never leads it round twice. */
  private readonly visited = new Set<string>()
  /** A step holds at least one owner's share of the claim, so an owner alone in the queue can fill it. */
  private readonly stepRows: number
  complete = false

  constructor(
    private readonly db: Db,
    private readonly dialect: DatabaseHandle['dialect'],
    private readonly priority: number,
    private readonly start: string | undefined,
    private readonly nowMs: number,
    private readonly perOwner: number,
    /** Successor links of earlier walks (ClaimRotation.next); MySQL only, where a round trip costs. */
    private readonly links: Map<string, string> | undefined,
  ) {
    this.after = start
    this.wrapped = start === undefined
    this.stepRows = Math.max(OWNER_SCAN_ROWS, perOwner)
    if (links && links.size > OWNER_LINKS_MAX) links.clear()
  }

  /** The owners the links name after `after`, at most `n`, never past `upTo` once wrapped. */
  private chain(n: number): string[] {
    const owners: string[] = []
    if (!this.links) return owners
    let at = this.after ?? ''
    while (owners.length < n) {
      const next = this.links.get(at)
      if (next === undefined || owners.includes(next) || this.visited.has(next)) break
      owners.push(next)
      if (this.upTo !== undefined && next === this.upTo) break
      at = next
    }
    return owners
  }

  /** Groups one step's rows by owner, and records the owners' order in the links. */
  private group(rows: readonly { owner_key: string; id: number; run_after: DbTime }[], from: string | undefined): OwnerCandidates[] {
    const due = toDbTime(this.nowMs)
    const step: OwnerCandidates[] = []
    let current: OwnerCandidates | undefined
    let prev = from ?? ''
    for (const row of rows) {
      const identity = ownerIdentity(this.dialect, row.owner_key)
      if (current?.identity !== identity) {
        current = { ownerKey: row.owner_key, identity, ids: [] }
        step.push(current)
        this.visited.add(row.owner_key)
        this.links?.set(prev, row.owner_key)
        prev = row.owner_key
      }
      // Times compare as text: both sides are `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
      if (row.run_after <= due && current.ids.length < this.perOwner) current.ids.push(Number(row.id))
    }
    return step
  }

  /**
   * The owners the links name, read in one statement of ranges. A range that comes back short
   * holds every owner between its bounds, so an owner it lacks has nothing pending and its link
   * is passed over; one that comes back full (a new owner with a deep queue) leaves the rest of
   * its range to later claims, which find it through the corrected links.
   */
  private async batched(chain: readonly string[]): Promise<OwnerCandidates[]> {
    const bounds = [this.after, ...chain]
    const rows = (await batchedWalkQuery(this.db, this.priority, bounds, this.stepRows, this.upTo).execute(this.db)).rows
    const found: OwnerCandidates[] = []
    for (let i = 0; i < chain.length; i++) {
      const branch = rows.filter((r) => Number(r.branch) === i)
      const step = this.group(branch, bounds[i])
      found.push(...step)
      const upTo = chain[i]!
      if (branch.length < this.stepRows && step.at(-1)?.ownerKey !== upTo) {
        // `upTo` has nothing pending: its predecessor's link skips it.
        const after = step.at(-1)?.ownerKey ?? bounds[i] ?? ''
        const beyond = this.links!.get(upTo)
        this.links!.delete(upTo)
        if (beyond !== undefined) this.links!.set(after, beyond)
        else this.links!.delete(after)
      }
    }
    this.after = chain.at(-1)
    if (this.upTo !== undefined && this.after === this.upTo) this.complete = true
    return found
  }

  get exhausted(): boolean {
    return this.complete || this.statements >= OWNER_SCAN_STATEMENTS
  }

  /** The next owners with due jobs, at least `want` of them unless the walk ends first. */
  async next(want: number): Promise<OwnerCandidates[]> {
    const found: OwnerCandidates[] = []
    while (found.length < want && !this.exhausted) {
      this.statements++
      const chain = this.chain(want - found.length)
      if (chain.length > 1) {
        found.push(...await this.batched(chain))
        continue
      }
      const rows = await ownerWalkQuery(this.db, this.priority, this.after, this.upTo, this.stepRows).execute()
      const step = this.group(rows, this.after)
      if (rows.length === this.stepRows) {
        // The last owner may go on past this step. Alone in it, it has more queued than one step
        // holds: its oldest entries are all it can use, and the next step starts after it.
        // Otherwise the next step starts at it, so it is read from its first entry.
        if (step.length > 1) step.pop()
        this.after = step[step.length - 1]!.ownerKey
        found.push(...step)
      } else if (this.wrapped) {
        found.push(...step)
        this.complete = true
      } else {
        found.push(...step)
        // The end of the index: on from its start up to where this walk began.
        this.wrapped = true
        this.after = undefined
        this.upTo = this.start
      }
    }
    return found.filter((o) => o.ids.length > 0)
  }
}

/** Running jobs per owner identity (both priorities together: the cap is the owner's). */
async function runningByOwner(db: Db, dialect: DatabaseHandle['dialect'], ownerKeys: readonly string[]): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  if (ownerKeys.length === 0) return counts
  for (const row of await runningByOwnerQuery(db, [...new Set(ownerKeys)]).execute()) {
    const identity = ownerIdentity(dialect, row.owner_key)
    counts.set(identity, (counts.get(identity) ?? 0) + Number(row.n))
  }
  return counts
}

interface PickedJob {
  id: number
  ownerKey: string
  identity: string
}

/**
 * Fills up to `slots` from the owners in walk order: each job goes to the owner with the fewest
 * jobs running (or picked here), the earliest in the walk on a tie, skipping owners at the cap.
 * So an owner with nothing running goes before one that has jobs running, and owners with the
 * same load take turns. `load` is updated with what is picked.
 */
function pickInTurn(owners: readonly OwnerCandidates[], load: Map<string, number>, cap: number, slots: number): PickedJob[] {
  const taken = owners.map(() => 0)
  const picked: PickedJob[] = []
  while (picked.length < slots) {
    let best = -1
    let bestLoad = Infinity
    owners.forEach((owner, i) => {
      if (taken[i]! >= owner.ids.length) return
      const l = load.get(owner.identity) ?? 0
      if (cap > 0 && l >= cap) return
      if (l < bestLoad) {
        best = i
        bestLoad = l
      }
    })
    if (best < 0) break
    const owner = owners[best]!
    picked.push({ id: owner.ids[taken[best]!]!, ownerKey: owner.ownerKey, identity: owner.identity })
    taken[best]!++
    load.set(owner.identity, bestLoad + 1)
  }
  return picked
}

/**
 * What one claim round means to take, read without locks: interactive owners first; bulk ones
 * only once the walk has seen every owner with a due interactive job and none of them could take
 * one more (under the cap). Moves `rotation` on past the owners it served.
 */
async function planClaim(handle: DatabaseHandle, options: ClaimOptions, limit: number, rotation: ClaimRotation): Promise<PickedJob[]> {
  const cap = options.ownerConcurrency ?? 0
  const perOwner = cap > 0 ? Math.min(cap, limit) : limit
  // Owners to choose among: a few more than the free slots, so owners with nothing running come
  // first. An owner with a deep queue costs a walk step of its own, so this stays small.
  const want = Math.min(64, limit + 4)
  const load = new Map<string, number>()
  const picked: PickedJob[] = []
  for (const priority of [JOB_PRIORITY.interactive, JOB_PRIORITY.bulk]) {
    const walk = new OwnerWalk(handle.db, handle.dialect, priority, rotation.after[priority], options.nowMs, perOwner, handle.dialect === 'mysql' ? rotation.next[priority] : undefined)
    const seen: OwnerCandidates[] = []
    while (picked.length < limit && !walk.exhausted) {
      const owners = await walk.next(want)
      const counts = await runningByOwner(handle.db, handle.dialect, owners.filter((o) => !load.has(o.identity)).map((o) => o.ownerKey))
      for (const o of owners) if (!load.has(o.identity)) load.set(o.identity, counts.get(o.identity) ?? 0)
      seen.push(...owners)
      picked.push(...pickInTurn(owners, load, cap, limit - picked.length))
    }
    // The last owner served, in walk order: the next claim of this priority starts after it.
    const served = new Set(picked.map((p) => p.identity))
    const last = seen.filter((o) => served.has(o.identity)).at(-1)
    if (last) rotation.after[priority] = last.ownerKey
    // A walk cut short may have left due interactive jobs unseen: bulk waits for the next claim.
    if (picked.length >= limit || !walk.complete) break
  }
  return picked
}

/**
 * Claims up to `limit` due jobs for this worker, fairly (SPEC §8): they become `running` with a
 * lease and one more attempt (`attempts` counts claims).
 *
 * The plan is read first, without locks (planClaim). Then one short transaction: on MySQL it locks
 * the `ai_claim_locks` rows of the picked owners (FOR UPDATE, in primary-key order, so claims
 * never deadlock on them), counts their running jobs again (under READ COMMITTED each statement
 * sees every claim committed before it, and a claim of the same owner on another replica waits
 * for this one's COMMIT), drops what would pass the cap, and locks the picked jobs by primary
 * key with SKIP LOCKED (a job another replica took meanwhile is skipped, never waited for). The
 * provider is called after it commits. SQLite has one writer: its transaction is the lock.
 */
export async function claimJobs(handle: DatabaseHandle, options: ClaimOptions): Promise<JobRow[]> {
  const rotation = options.rotation ?? newClaimRotation()
  const claimed: JobRow[] = []
  for (let round = 0; round < CLAIM_ROUNDS && claimed.length < options.limit; round++) {
    const picked = await planClaim(handle, options, options.limit - claimed.length, rotation)
    if (picked.length === 0) break
    const rows = await takePicked(handle, options, picked)
    claimed.push(...rows)
    // Everything picked was taken: the plan held every job that could be.
    if (rows.length === picked.length) break
  }
  return claimed
}

async function takePicked(handle: DatabaseHandle, options: ClaimOptions, picked: readonly PickedJob[]): Promise<JobRow[]> {
  const cap = options.ownerConcurrency ?? 0
  const now = toDbTime(options.nowMs)
  const leaseUntil = toDbTime(options.nowMs + options.leaseMs)
  const running = {
    // External mode: each claim is the next dispatch. A failed dispatch gives its number back
    // (requeueJob with refundDispatch), so it is re-sent with the same number and only an expired
    // lease moves it on (SPEC §5). The count never goes back, not even across an admin retry, so
    // a worker's result for the retried job is never mistaken for an older delivery.
    ...(options.dispatch ? { dispatch_attempt: sql<number>`dispatch_attempt + 1` } : {}),
    status: 'running' as const,
    lease_owner: options.leaseOwner,
    lease_expires_at: leaseUntil,
    started_at: now,
    updated_at: now,
    attempts: sql<number>`attempts + 1`,
    version: bump,
  }
  const mysql = handle.dialect === 'mysql'
  const take = async (trx: Transaction<Database>): Promise<JobRow[]> => {
    let chosen = picked
    if (cap > 0) {
      if (mysql) await claimLocksQuery(trx, [...new Set(picked.map((p) => claimLockOf(p.identity)))]).forUpdate().execute()
      const counts = await runningByOwner(trx, handle.dialect, picked.map((p) => p.ownerKey))
      chosen = picked.filter((p) => {
        const n = counts.get(p.identity) ?? 0
        if (n >= cap) return false
        counts.set(p.identity, n + 1)
        return true
      })
      if (chosen.length === 0) return []
    }
    let lock = pickedJobsQuery(trx, chosen.map((p) => p.id), options.nowMs)
    if (mysql) lock = lock.forUpdate().skipLocked()
    const ids = (await lock.execute()).map((r) => Number(r.id))
    if (ids.length === 0) return []
    await trx.updateTable('ai_jobs').set(running).where('id', 'in', ids).execute()
    const rows = await trx.selectFrom('ai_jobs').selectAll().where('id', 'in', ids).execute()
    // In the order they were picked: the pool starts them in turn.
    const order = new Map(chosen.map((p, i) => [p.id, i]))
    return rows.sort((a, b) => order.get(Number(a.id))! - order.get(Number(b.id))!)
  }
  if (!mysql) return handle.db.transaction().execute(take)
  return retryOnLockConflict(() => handle.db.transaction().execute(take))
}

/** MySQL's deadlock (1213) and lock wait timeout (1205): the transaction was rolled back and may simply run again. */
export function isLockConflict(err: unknown): boolean {
  const e = err as { errno?: number; code?: string } | null
  return e?.errno === 1213 || e?.errno === 1205 || e?.code === 'ER_LOCK_DEADLOCK' || e?.code === 'ER_LOCK_WAIT_TIMEOUT'
}

export const LOCK_CONFLICT_TRIES = 5

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Runs `fn` again after a lock conflict, up to 5 tries in all, waiting a full-jitter delay
 * (uniform in [0, 10 ms · 2^n), so 20, 40, 80, 160 ms ceilings) between them. Other errors, and the
 * fifth conflict, are thrown. `random` and `sleep` are injectable for tests.
 */
export async function retryOnLockConflict<T>(
  fn: () => Promise<T>,
  random: () => number = Math.random,
  sleep: (ms: number) => Promise<void> = realSleep,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn()
    } catch (err) {
      if (!isLockConflict(err) || attempt >= LOCK_CONFLICT_TRIES - 1) throw err
      await sleep(Math.floor(random() * 10 * 2 ** (attempt + 1)))
    }
  }
}

/**
 * Renews the leases this worker still holds; returns the ids it no longer holds (canceled, or
 * reaped and perhaps claimed by another worker). A renewal is not a visible change: `version`
 * stays, so ETags do not move on every heartbeat.
 */
export async function renewLeases(db: Db, ids: number[], leaseOwner: string, nowMs: number, leaseMs: number): Promise<number[]> {
  if (ids.length === 0) return []
  await db.updateTable('ai_jobs').set({ lease_expires_at: toDbTime(nowMs + leaseMs) }).$call(heldBy(ids, leaseOwner)).execute()
  const held = await db.selectFrom('ai_jobs').select('id').$call(heldBy(ids, leaseOwner)).execute()
  const heldIds = new Set(held.map((r) => Number(r.id)))
  return ids.filter((id) => !heldIds.has(id))
}

export interface Outcome {
  status: 'succeeded' | 'failed'
  resultJson: string | null
  /** The key of a result stored outside the table (then `resultJson` is null); none by default. */
  resultRef?: string | null
  errorText: string | null
  providerMs: number | null
  workerMs: number | null
  inputTokens: number | null
  outputTokens: number | null
  /** Tokens this attempt's provider calls cost, added to the job's `billed_tokens`. */
  billedTokens?: number
}

/**
 * Writes a terminal outcome, fenced on the lease: zero rows changed means another worker or a
 * cancel owns the job now, and the caller drops its result. `events`: the outbox row for
 * WordPress is written in the same transaction.
 */
export async function finishJob(db: Db, id: number, leaseOwner: string, outcome: Outcome, nowMs: number, events = false): Promise<boolean> {
  if (events) {
    return inTransaction(db, async (trx) => {
      const written = await finishJob(trx, id, leaseOwner, outcome, nowMs)
      if (written) await recordTerminalEvents(trx, [id], nowMs)
      return written
    })
  }
  const r = await db.updateTable('ai_jobs').set({
    status: outcome.status,
    result_json: outcome.resultJson,
    result_ref: outcome.resultRef ?? null,
    error_text: outcome.errorText,
    provider_ms: outcome.providerMs,
    worker_ms: outcome.workerMs,
    input_tokens: outcome.inputTokens,
    output_tokens: outcome.outputTokens,
    billed_tokens: sql<number>`billed_tokens + ${outcome.billedTokens ?? 0}`,
    // A terminal job holds no reservation: it is settled in this same write (SPEC §8).
    reserved_tokens: 0,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: toDbTime(nowMs),
    version: bump,
  }).$call(heldBy(id, leaseOwner)).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

export interface FinishItem {
  id: number
  outcome: Outcome
  /** With budgets: what the job settles into the usage table, in the same transaction. */
  settlement?: Settlement
}

/** The most rows one finishJobs statement writes; a longer list is written in chunks this long. */
export const FINISH_CHUNK = 100

/**
 * finishJob for many jobs at once: each row gets its own outcome, fenced exactly like finishJob
 * (still `running` under `leaseOwner`); returns the ids written. The others were canceled, reaped
 * or claimed by another worker meanwhile, and keep what they hold.
 *
 * One UPDATE sets every column with `CASE id WHEN ? THEN ? … END` (all values bound). What it
 * cannot tell by itself is *which* rows it wrote when it wrote fewer than asked: afterwards a row
 * of ours and a row failed by the reaper or completed by a webhook can look the same. So:
 * - SQLite: `UPDATE … RETURNING id` names exactly the rows the statement changed, and a statement
 *   is atomic (one writer at a time): one statement in all.
 * - MySQL/MariaDB: one transaction. `SELECT id … FOR UPDATE` with the same fence takes row locks on
 *   the rows still ours (a locking read sees the latest committed row, waiting out a cancel or a
 *   reap in progress, and under READ COMMITTED keeps locks only on the rows that match). Nobody
 *   can change those rows until COMMIT, so the fenced UPDATE that follows writes exactly them;
 *   a different count would mean that reasoning failed, and the transaction is rolled back
 *   (nothing written) with an error rather than guessing. BEGIN, SELECT, UPDATE, COMMIT: four
 *   statements for the batch. A single job is one plain finishJob.
 */
export async function finishJobs(handle: DatabaseHandle, leaseOwner: string, items: readonly FinishItem[], nowMs: number, events = false): Promise<Set<number>> {
  if (new Set(items.map((i) => i.id)).size !== items.length) throw new Error('finishJobs: an id is listed twice')
  const written = new Set<number>()
  for (let start = 0; start < items.length; start += FINISH_CHUNK) {
    for (const id of await finishChunk(handle, leaseOwner, items.slice(start, start + FINISH_CHUNK), nowMs, events)) written.add(id)
  }
  return written
}

async function finishChunk(handle: DatabaseHandle, leaseOwner: string, items: readonly FinishItem[], nowMs: number, events: boolean): Promise<number[]> {
  if (items.length === 0) return []
  const settles = items.some((i) => i.settlement !== undefined)
  const settle = async (trx: Transaction<Database>, written: Iterable<number>) => {
    const ids = new Set(written)
    await addUsage(handle, trx, items.filter((i) => ids.has(i.id) && i.settlement).map((i) => i.settlement!))
  }
  if (items.length === 1 && !settles) {
    const [{ id, outcome }] = items as [FinishItem]
    return (await finishJob(handle.db, id, leaseOwner, outcome, nowMs, events)) ? [id] : []
  }
  if (handle.dialect === 'sqlite') {
    // One writer at a time: UPDATE … RETURNING names exactly the rows written; with budgets the
    // usage rows, and with events their outbox rows, are added in the same transaction.
    const write = async (db: Db) => (await finishManyQuery(db, leaseOwner, items, nowMs).returning('id').execute()).map((r) => Number(r.id))
    if (!settles && !events) return write(handle.db)
    return handle.db.transaction().execute(async (trx) => {
      const written = await write(trx)
      if (settles) await settle(trx, written)
      if (events) await recordTerminalEvents(trx, written, nowMs)
      return written
    })
  }
  return retryOnLockConflict(() => handle.db.transaction().execute(async (trx) => {
    const held = await trx.selectFrom('ai_jobs').select('id').$call(heldBy(items.map((i) => i.id), leaseOwner)).forUpdate().execute()
    const heldIds = new Set(held.map((r) => Number(r.id)))
    if (heldIds.size === 0) return []
    const r = await finishManyQuery(trx, leaseOwner, items.filter((i) => heldIds.has(i.id)), nowMs).executeTakeFirst()
    if (Number(r.numUpdatedRows) !== heldIds.size) {
      throw new Error(`finishJobs: locked ${heldIds.size} rows but the update wrote ${Number(r.numUpdatedRows)}; rolled back`)
    }
    if (settles) await settle(trx, heldIds)
    if (events) await recordTerminalEvents(trx, heldIds, nowMs)
    return [...heldIds]
  }))
}

/** The fenced UPDATE of finishJobs, each row's values picked by `CASE id`. */
function finishManyQuery(db: Db, leaseOwner: string, items: readonly FinishItem[], nowMs: number) {
  const perRow = <T>(column: 'status' | 'result_json' | 'result_ref' | 'error_text' | 'provider_ms' | 'worker_ms' | 'input_tokens' | 'output_tokens', value: (o: Outcome) => unknown) =>
    // No row falls to ELSE (the WHERE lists the same ids); it keeps the column as it is regardless.
    sql<T>`CASE id ${sql.join(items.map((i) => sql`WHEN ${i.id} THEN ${value(i.outcome)}`), sql` `)} ELSE ${sql.ref(column)} END`
  return db.updateTable('ai_jobs').set({
    status: perRow<JobStatus>('status', (o) => o.status),
    result_json: perRow<string | null>('result_json', (o) => o.resultJson),
    result_ref: perRow<string | null>('result_ref', (o) => o.resultRef ?? null),
    error_text: perRow<string | null>('error_text', (o) => o.errorText),
    provider_ms: perRow<number | null>('provider_ms', (o) => o.providerMs),
    worker_ms: perRow<number | null>('worker_ms', (o) => o.workerMs),
    input_tokens: perRow<number | null>('input_tokens', (o) => o.inputTokens),
    output_tokens: perRow<number | null>('output_tokens', (o) => o.outputTokens),
    billed_tokens: sql<number>`billed_tokens + CASE id ${sql.join(items.map((i) => sql`WHEN ${i.id} THEN ${i.outcome.billedTokens ?? 0}`), sql` `)} ELSE 0 END`,
    reserved_tokens: 0,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: toDbTime(nowMs),
    version: bump,
  }).$call(heldBy(items.map((i) => i.id), leaseOwner))
}

export interface Requeue {
  runAfterMs: number
  errorText: string | null
  /** True when this run must not count as an attempt (shutdown, open breaker). */
  refundAttempt: boolean
  /** External mode: a dispatch the worker never accepted gives its number back too. */
  refundDispatch?: boolean
  /** Tokens this attempt's provider calls cost, added to the job's `billed_tokens`. */
  billedTokens?: number
}

/** Returns a claimed job to `pending` (fenced like finishJob). */
export async function requeueJob(db: Db, id: number, leaseOwner: string, requeue: Requeue, nowMs: number): Promise<boolean> {
  const r = await db.updateTable('ai_jobs').set({
    status: 'pending',
    run_after: toDbTime(requeue.runAfterMs),
    error_text: requeue.errorText,
    lease_owner: null,
    lease_expires_at: null,
    attempts: requeue.refundAttempt ? sql<number>`CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END` : sql<number>`attempts`,
    ...(requeue.refundDispatch ? { dispatch_attempt: sql<number>`CASE WHEN dispatch_attempt > 0 THEN dispatch_attempt - 1 ELSE 0 END` } : {}),
    ...(requeue.billedTokens ? { billed_tokens: sql<number>`billed_tokens + ${requeue.billedTokens}` } : {}),
    updated_at: toDbTime(nowMs),
    version: bump,
  }).$call(heldBy(id, leaseOwner)).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

export interface ReapResult {
  requeued: number
  failed: number
  /** The jobs this call moved, so streams and caches can follow. */
  ids: number[]
  /** With `settle`: what the jobs failed here settled. */
  settled: Settled[]
}

export interface ReapOptions {
  maxAttempts: number
  /** The job-level backoff before the next claim, from the attempts already spent. */
  backoffMs: (attempts: number) => number
  /** At most this many jobs per call; the next round takes the rest. */
  limit?: number
  /** With budgets: a job failed here is settled in the same transaction (its dialect picks the upsert). */
  settle?: Pick<DatabaseHandle, 'dialect'>
  /** With events to WordPress: a job failed here gets its outbox row in the same transaction. */
  events?: boolean
}

/**
 * Returns jobs whose lease expired (their worker died or stalled) to `pending` after the
 * job-level backoff, or fails them with an `error_text` once `maxAttempts` claims are spent.
 * Each row is written on its own, fenced on the lease it was seen with and on the expiry, so a
 * worker that renews at the same moment keeps its job and a job claimed again meanwhile is left
 * alone.
 */
export async function reapExpiredLeases(db: Db, nowMs: number, options: ReapOptions): Promise<ReapResult> {
  const now = toDbTime(nowMs)
  // Reads the `lease (status, lease_expires_at)` index; no locks are held between the two steps.
  const expired = await db.selectFrom('ai_jobs').select(['id', 'attempts', 'lease_owner', 'error_text', 'owner_key', 'user_id', 'created_at', 'reserved_tokens', 'billed_tokens'])
    .where('status', '=', 'running').where('lease_expires_at', '<', now)
    .orderBy('lease_expires_at').limit(options.limit ?? 500)
    .execute()
  const result: ReapResult = { requeued: 0, failed: 0, ids: [], settled: [] }
  for (const row of expired) {
    const attempts = Number(row.attempts)
    const spent = attempts >= options.maxAttempts
    const lastError = row.error_text ? ` Last error: ${row.error_text}` : ''
    let q = db.updateTable('ai_jobs').set(spent
      ? {
        status: 'failed',
        // TEXT holds 65,535 bytes: 16,000 characters fit even at 4 bytes each.
        error_text: `Attempt ${attempts} of ${options.maxAttempts} ran out its lease without a result (the worker stopped, or an external worker never answered); no attempts are left.${lastError}`.slice(0, 16_000),
        reserved_tokens: 0,
        lease_owner: null,
        lease_expires_at: null,
        updated_at: now,
        version: bump,
      }
      : {
        status: 'pending',
        run_after: toDbTime(nowMs + options.backoffMs(attempts)),
        error_text: `Attempt ${attempts} ran out its lease without a result; the job will run again.`,
        lease_owner: null,
        lease_expires_at: null,
        updated_at: now,
        version: bump,
      })
      .where('id', '=', row.id).where('status', '=', 'running').where('lease_expires_at', '<', now)
    q = row.lease_owner === null ? q.where('lease_owner', 'is', null) : q.where('lease_owner', '=', row.lease_owner)
    const settle = spent && options.settle ? options.settle : undefined
    const announce = spent && options.events === true
    const written = settle || announce
      ? await inTransaction(db, async (trx) => {
        const changed = Number((await trx.executeQuery(q.compile())).numAffectedRows ?? 0) === 1
        if (changed && settle) await addUsage(settle, trx, [{ ownerKey: row.owner_key, userId: Number(row.user_id), createdAt: row.created_at, tokens: Number(row.billed_tokens), unmeteredCalls: 0, jobs: 1 }])
        if (changed && announce) await recordTerminalEvents(trx, [Number(row.id)], nowMs)
        return changed
      })
      : Number((await q.executeTakeFirst()).numUpdatedRows) === 1
    if (written) {
      result[spent ? 'failed' : 'requeued']++
      result.ids.push(Number(row.id))
      if (settle) result.settled.push(settledOf(row))
    }
  }
  return result
}

/** What a terminal transition outside the pool settled: the reservation it released and what it billed. */
export interface Settled {
  ownerKey: string
  userId: number
  createdAt: DbTime
  /** The reservation the job held until now. */
  reserved: number
  /** What it cost over all its attempts. */
  billed: number
}

function settledOf(row: Pick<JobRow, 'owner_key' | 'user_id' | 'created_at' | 'reserved_tokens' | 'billed_tokens'>): Settled {
  return { ownerKey: row.owner_key, userId: Number(row.user_id), createdAt: row.created_at, reserved: Number(row.reserved_tokens), billed: Number(row.billed_tokens) }
}

function cancelQuery(db: Db, id: number, nowMs: number) {
  return db.updateTable('ai_jobs').set({
    status: 'canceled',
    reserved_tokens: 0,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: toDbTime(nowMs),
    version: bump,
  }).where('id', '=', id).where('status', 'in', ['pending', 'running'])
}

/**
 * Cancels a pending or running job; returns the job as it is afterwards, or undefined if missing.
 * `events`: the outbox row for WordPress is written in the same transaction.
 */
export async function cancelJob(db: Db, id: number, nowMs: number, events = false): Promise<{ changed: boolean; row: JobRow | undefined }> {
  if (events) {
    return inTransaction(db, async (trx) => {
      const r = await cancelQuery(trx, id, nowMs).executeTakeFirst()
      const changed = Number(r.numUpdatedRows) === 1
      if (changed) await recordTerminalEvents(trx, [id], nowMs)
      return { changed, row: await findJob(trx, id) }
    })
  }
  const r = await cancelQuery(db, id, nowMs).executeTakeFirst()
  return { changed: Number(r.numUpdatedRows) === 1, row: await findJob(db, id) }
}

/**
 * cancelJob with budgets: the job's reservation is released and what it cost so far goes to the
 * usage table, in the same transaction (a job canceled before any provider call is charged 0).
 */
export async function cancelJobSettled(handle: Pick<DatabaseHandle, 'db' | 'dialect'>, id: number, nowMs: number, events = false): Promise<{ changed: boolean; row: JobRow | undefined; settled?: Settled }> {
  return handle.db.transaction().execute(async (trx) => {
    let before = trx.selectFrom('ai_jobs').selectAll().where('id', '=', id).where('status', 'in', ['pending', 'running'])
    if (handle.dialect === 'mysql') before = before.forUpdate()
    const open = await before.executeTakeFirst()
    const changed = open !== undefined && Number((await cancelQuery(trx, id, nowMs).executeTakeFirst()).numUpdatedRows) === 1
    const settled = changed ? settledOf(open) : undefined
    if (settled) await addUsage(handle, trx, [{ ownerKey: settled.ownerKey, userId: settled.userId, createdAt: settled.createdAt, tokens: settled.billed, unmeteredCalls: 0, jobs: 1 }])
    if (changed && events) await recordTerminalEvents(trx, [id], nowMs)
    return { changed, row: await findJob(trx, id), ...(settled ? { settled } : {}) }
  })
}

/**
 * What the calls of an attempt that wrote no result cost (canceled or taken over mid-call): added
 * to the job's `billed_tokens`. A job already settled (canceled) with budgets on gets it in its
 * day's usage too, in the same transaction, and the caller adjusts the store's counters.
 */
export async function chargeAttempt(handle: Pick<DatabaseHandle, 'db' | 'dialect'>, id: number, tokens: number, unmeteredCalls: number, settle: boolean): Promise<Settled | undefined> {
  if (tokens <= 0) return undefined
  return handle.db.transaction().execute(async (trx) => {
    let read = trx.selectFrom('ai_jobs').select(['status', 'owner_key', 'user_id', 'created_at', 'reserved_tokens', 'billed_tokens']).where('id', '=', id)
    if (handle.dialect === 'mysql') read = read.forUpdate()
    const row = await read.executeTakeFirst()
    if (!row) return undefined
    await trx.updateTable('ai_jobs').set({ billed_tokens: sql<number>`billed_tokens + ${tokens}` }).where('id', '=', id).execute()
    if (!settle || !TERMINAL.includes(row.status)) return undefined
    await addUsage(handle, trx, [{ ownerKey: row.owner_key, userId: Number(row.user_id), createdAt: row.created_at, tokens, unmeteredCalls, jobs: 0 }])
    return { ...settledOf(row), reserved: 0, billed: tokens }
  })
}

const TERMINAL: readonly JobStatus[] = ['succeeded', 'failed', 'canceled']

/**
 * The admin retry: the one way a terminal job runs again, with its attempts reset. `reserve`:
 * the tokens its new run holds while open (budgets); an admin's retry is never refused for them.
 */
export async function retryJob(db: Db, id: number, nowMs: number, reserve = 0): Promise<boolean> {
  const now = toDbTime(nowMs)
  const r = await db.updateTable('ai_jobs').set({
    status: 'pending',
    // Attempts start over; dispatch_attempt does not (see claimJobs).
    attempts: 0,
    reserved_tokens: reserve,
    run_after: now,
    result_json: null,
    // A stored result goes with it; the caller deletes its object once this is committed.
    result_ref: null,
    error_text: null,
    webhook_ts: null,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: now,
    version: bump,
  }).where('id', '=', id).where('status', 'in', ['succeeded', 'failed', 'canceled']).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

/**
 * The stored results (`result_ref`) of these rows, or of every row of `userId`: what archive and
 * erase read before they delete the rows, to delete the objects once the rows are gone (a row
 * never names a deleted object; an object left behind by a crash in between names no row).
 */
export async function findResultRefs(db: Db, which: { ids: readonly number[] } | { userId: number }): Promise<string[]> {
  let q = db.selectFrom('ai_jobs').select('result_ref').where('result_ref', 'is not', null)
  if ('ids' in which) {
    if (which.ids.length === 0) return []
    q = q.where('id', 'in', which.ids)
  } else {
    q = q.where('user_id', '=', which.userId)
  }
  return (await q.execute()).map((r) => r.result_ref!)
}

/** Enough of `request_json` to read which key sealed it: `aes256gcm:` + a key id of up to 32 + `:`. */
export const REQUEST_HEAD_CHARS = 48

/**
 * The next `limit` rows after `afterId`, by id, with the start of each `request_json`: key
 * rotation walks the table with it, a primary-key range per call, so no query scans far.
 */
export async function listRequestHeads(db: Db, afterId: number, limit: number): Promise<{ id: number; head: string }[]> {
  const rows = await db.selectFrom('ai_jobs')
    .select(['id', sql<string>`SUBSTR(request_json, 1, ${REQUEST_HEAD_CHARS})`.as('head')])
    .where('id', '>', afterId).orderBy('id').limit(limit).execute()
  return rows.map((r) => ({ id: Number(r.id), head: r.head }))
}

/** The stored requests of these rows, with the idempotency key they are sealed to. */
export async function findRequests(db: Db, ids: readonly number[]): Promise<Pick<JobRow, 'id' | 'request_json' | 'idempotency_key'>[]> {
  if (ids.length === 0) return []
  return db.selectFrom('ai_jobs').select(['id', 'request_json', 'idempotency_key']).where('id', 'in', ids).orderBy('id').execute()
}

/**
 * Key rotation's write: the row's `request_json` becomes `to` only if it is still `from`, so a
 * row that changed meanwhile is left alone. Compared as bytes: the column's collation
 * (`utf8mb4_unicode_520_ci`) would call two ciphertexts differing only in case equal. Nothing
 * else changes: the request reads the same, so `version` and `updated_at` stay (no ETag moves,
 * and a running job's fenced writes still match).
 */
export async function replaceRequestJson(db: Db, dialect: DatabaseHandle['dialect'], id: number, from: string, to: string): Promise<boolean> {
  const same = dialect === 'mysql'
    ? sql<boolean>`CAST(request_json AS BINARY) = CAST(${from} AS BINARY)`
    : sql<boolean>`request_json = ${from}`
  const r = await db.updateTable('ai_jobs').set({ request_json: to }).where('id', '=', id).where(same).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

/**
 * The queue as /metrics reports it: jobs pending and running (counted on the `status_created`
 * index, so only the queue's own rows are read, never the finished history), and the oldest
 * pending job's created_at (the first entry of that index).
 */
export async function queueDepth(db: Db): Promise<{ pending: number; running: number; oldestPendingAt: DbTime | null }> {
  const count = async (status: JobStatus) => Number((await db.selectFrom('ai_jobs').select(sql<number>`COUNT(*)`.as('n')).where('status', '=', status).executeTakeFirst())?.n ?? 0)
  const [pending, running, oldest] = await Promise.all([
    count('pending'),
    count('running'),
    db.selectFrom('ai_jobs').select('created_at').where('status', '=', 'pending').orderBy('created_at').limit(1).executeTakeFirst(),
  ])
  return { pending, running, oldestPendingAt: oldest?.created_at ?? null }
}

/** For /readyz. */
export async function pingDatabase(db: Db): Promise<void> {
  await sql`SELECT 1`.execute(db)
}

/** External mode: a dispatch the worker accepted (2xx) waits for its webhook until the lease ends. */
export async function markDispatched(db: Db, id: number, leaseOwner: string, nowMs: number, waitMs: number): Promise<boolean> {
  const r = await db.updateTable('ai_jobs').set({
    dispatched_at: toDbTime(nowMs),
    lease_expires_at: toDbTime(nowMs + waitMs),
    updated_at: toDbTime(nowMs),
    version: bump,
  }).$call(heldBy(id, leaseOwner)).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

export interface WebhookOutcome {
  status: 'succeeded' | 'failed'
  resultJson: string | null
  /** The key of a result stored outside the table (then `resultJson` is null). */
  resultRef?: string | null
  errorText: string | null
  providerMs: number | null
  /** From the accepted dispatch to this webhook. */
  workerMs: number | null
  outputTokens: number | null
}

export interface WebhookDelivery {
  jobId: number
  /** The delivery's `attempt`, when it names one: only the current dispatch may complete the job. */
  attempt: number | undefined
  /** hex sha256 of the delivery's replay key: recorded with the outcome, in one transaction. */
  receiptKey: string
  outcome: WebhookOutcome
  nowMs: number
  /**
   * With budgets: the tokens this delivery bills (its `usage.tokens`, or the job's reservation
   * when it reported none) settle the job in the same transaction.
   */
  settle?: { dialect: DatabaseHandle['dialect']; tokens: (reserved: number) => number; unmetered: boolean }
  /** With events to WordPress: the job's outbox row is written in the same transaction. */
  events?: boolean
}

/**
 * A verified webhook's result, in one transaction: the delivery's receipt is recorded, and a
 * `pending` or `running` job moves to its terminal state, but only while the delivery's dispatch
 * attempt (when given) is still the current one. Terminal jobs never change. A receipt already
 * recorded means this delivery reached the job before (a replay): nothing changes. Resolves to
 * `changed` when the job moved, `duplicate` for a replay, `ignored` otherwise.
 */
export async function completeFromWebhook(db: Kysely<Database>, delivery: WebhookDelivery): Promise<{ outcome: 'changed' | 'duplicate' | 'ignored'; settled?: Settled }> {
  const now = toDbTime(delivery.nowMs)
  const { outcome } = delivery
  return db.transaction().execute(async (trx) => {
    try {
      await trx.insertInto('ai_webhook_receipts').values({ replay_key: delivery.receiptKey, job_id: delivery.jobId, created_at: now }).execute()
    } catch (err) {
      if (isDuplicateKey(err)) return { outcome: 'duplicate' }
      throw err
    }
    const { settle } = delivery
    let open: Pick<JobRow, 'owner_key' | 'user_id' | 'created_at' | 'reserved_tokens' | 'billed_tokens'> | undefined
    if (settle) {
      let read = trx.selectFrom('ai_jobs').select(['owner_key', 'user_id', 'created_at', 'reserved_tokens', 'billed_tokens']).where('id', '=', delivery.jobId)
      if (settle.dialect === 'mysql') read = read.forUpdate()
      open = await read.executeTakeFirst()
    }
    const billed = settle && open ? settle.tokens(Number(open.reserved_tokens)) : 0
    let q = trx.updateTable('ai_jobs').set({
      billed_tokens: sql<number>`billed_tokens + ${billed}`,
      reserved_tokens: 0,
      status: outcome.status,
      result_json: outcome.resultJson,
      result_ref: outcome.resultRef ?? null,
      error_text: outcome.errorText,
      provider_ms: outcome.providerMs,
      output_tokens: outcome.outputTokens,
      worker_ms: outcome.workerMs,
      webhook_ts: now,
      lease_owner: null,
      lease_expires_at: null,
      updated_at: now,
      version: bump,
    }).where('id', '=', delivery.jobId).where('status', 'in', ['pending', 'running'])
    if (delivery.attempt !== undefined) q = q.where('dispatch_attempt', '=', delivery.attempt)
    const r = await q.executeTakeFirst()
    if (Number(r.numUpdatedRows) !== 1) return { outcome: 'ignored' }
    if (delivery.events) await recordTerminalEvents(trx, [delivery.jobId], delivery.nowMs)
    if (!settle || !open) return { outcome: 'changed' }
    const settled = { ...settledOf(open), billed: Number(open.billed_tokens) + billed }
    await addUsage(settle, trx, [{ ownerKey: settled.ownerKey, userId: settled.userId, createdAt: settled.createdAt, tokens: settled.billed, unmeteredCalls: settle.unmetered ? 1 : 0, jobs: 1 }])
    return { outcome: 'changed', settled }
  })
}

/** A unique key refused the row (MySQL 1062, SQLite's UNIQUE constraint). */
export function isDuplicateKey(err: unknown): boolean {
  const e = err as { code?: string; errno?: number } | null
  return e?.code === 'ER_DUP_ENTRY' || e?.errno === 1062 || e?.code === 'SQLITE_CONSTRAINT_UNIQUE' || e?.code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
}

/** `created_at`'s UTC day as `YYYY-MM-DD` (times are stored in UTC in both dialects). */
function utcDayOf(handle: DatabaseHandle) {
  return handle.dialect === 'mysql' ? sql<string>`DATE_FORMAT(created_at, '%Y-%m-%d')` : sql<string>`substr(created_at, 1, 10)`
}

/** What the usage export groups by (SPEC §4 `GET /admin/usage.csv`). */
export type UsageGroup = 'day' | 'user' | 'model'

export interface UsageRow {
  day?: string
  user_id?: number
  model?: string
  jobs: number
  pending: number
  running: number
  succeeded: number
  failed: number
  canceled: number
  input_tokens: number
  output_tokens: number
  provider_ms: number
}

/**
 * Usage over jobs created in [fromMs, toMs), grouped by any of day (UTC), user and model, in
 * group order, read as a stream so an export of any size holds one chunk of rows at a time.
 */
export async function* streamUsage(handle: DatabaseHandle, fromMs: number, toMs: number, groups: readonly UsageGroup[]): AsyncGenerator<UsageRow> {
  const day = utcDayOf(handle)
  const count = (status: JobStatus) => sql<number>`SUM(CASE WHEN status = ${status} THEN 1 ELSE 0 END)`
  const keys = groups.map((g) => (g === 'day' ? day : g === 'user' ? sql.ref('user_id') : sql.ref('model')))
  let q = handle.db.selectFrom('ai_jobs')
    .select([
      sql<number>`COUNT(*)`.as('jobs'),
      count('pending').as('pending'), count('running').as('running'), count('succeeded').as('succeeded'),
      count('failed').as('failed'), count('canceled').as('canceled'),
      sql<number>`COALESCE(SUM(input_tokens), 0)`.as('input_tokens'),
      sql<number>`COALESCE(SUM(output_tokens), 0)`.as('output_tokens'),
      sql<number>`COALESCE(SUM(provider_ms), 0)`.as('provider_ms'),
    ])
    .where('created_at', '>=', toDbTime(fromMs))
    .where('created_at', '<', toDbTime(toMs))
  if (groups.includes('day')) q = q.select(day.as('day'))
  if (groups.includes('user')) q = q.select('user_id')
  if (groups.includes('model')) q = q.select('model')
  if (keys.length > 0) q = q.groupBy(keys)
  for (const key of keys) q = q.orderBy(key)
  for await (const r of q.stream(1000)) {
    const row: UsageRow = {
      jobs: Number(r.jobs), pending: Number(r.pending), running: Number(r.running), succeeded: Number(r.succeeded), failed: Number(r.failed),
      canceled: Number(r.canceled), input_tokens: Number(r.input_tokens), output_tokens: Number(r.output_tokens), provider_ms: Number(r.provider_ms),
    }
    const named = r as { day?: string; user_id?: number; model?: string }
    if (named.day !== undefined) row.day = named.day
    if (named.user_id !== undefined) row.user_id = Number(named.user_id)
    if (named.model !== undefined) row.model = named.model
    yield row
  }
}

const ALL_STATUSES: readonly JobStatus[] = ['pending', 'running', 'succeeded', 'failed', 'canceled']

export interface DayStatusRow {
  /** UTC day, `YYYY-MM-DD`. */
  day: string
  status: JobStatus
  jobs: number
  input_tokens: number
  output_tokens: number
}

/**
 * Jobs created in [fromMs, toMs), counted by UTC day and status, with their tokens. Exported so
 * a test can EXPLAIN it. Only the rows in the range are read: MariaDB takes one range of
 * `created (created_at, id)`, or, with every status named so `status IN (…)` leads, one short
 * range of `status_created (status, created_at)` per status (SQLite does).
 */
export function jobsByDayQuery(handle: DatabaseHandle, fromMs: number, toMs: number) {
  const day = utcDayOf(handle)
  return handle.db.selectFrom('ai_jobs')
    .select([
      day.as('day'),
      'status',
      sql<number>`COUNT(*)`.as('jobs'),
      sql<number>`COALESCE(SUM(input_tokens), 0)`.as('input_tokens'),
      sql<number>`COALESCE(SUM(output_tokens), 0)`.as('output_tokens'),
    ])
    .where('status', 'in', ALL_STATUSES)
    .where('created_at', '>=', toDbTime(fromMs))
    .where('created_at', '<', toDbTime(toMs))
    .groupBy([day, 'status'])
}

/** {@link jobsByDayQuery}, read. */
export async function jobsByDay(handle: DatabaseHandle, fromMs: number, toMs: number): Promise<DayStatusRow[]> {
  const rows = await jobsByDayQuery(handle, fromMs, toMs).execute()
  return rows.map((r) => ({
    day: r.day, status: r.status, jobs: Number(r.jobs), input_tokens: Number(r.input_tokens), output_tokens: Number(r.output_tokens),
  }))
}

/**
 * The newest `limit` provider latencies of finished jobs with `status`, created in [fromMs, toMs).
 * Exported so a test can EXPLAIN it: one status and a range on `created_at` walk
 * `status_created (status, created_at)` backwards and stop after `limit` rows, however many
 * jobs the range holds (no filesort).
 */
export function latencySamplesQuery(db: Db, status: 'succeeded' | 'failed', fromMs: number, toMs: number, limit: number) {
  return db.selectFrom('ai_jobs').select('provider_ms')
    .where('status', '=', status)
    .where('created_at', '>=', toDbTime(fromMs))
    .where('created_at', '<', toDbTime(toMs))
    .where('provider_ms', 'is not', null)
    .orderBy('created_at', 'desc')
    .limit(limit)
}

/**
 * Provider latencies (ms) of jobs created in [fromMs, toMs) that finished (succeeded or failed),
 * at most `limitPerStatus` of each status, newest first.
 */
export async function latencySamples(db: Db, fromMs: number, toMs: number, limitPerStatus: number): Promise<number[]> {
  const [succeeded, failed] = await Promise.all([
    latencySamplesQuery(db, 'succeeded', fromMs, toMs, limitPerStatus).execute(),
    latencySamplesQuery(db, 'failed', fromMs, toMs, limitPerStatus).execute(),
  ])
  return [...succeeded, ...failed].map((r) => Number(r.provider_ms))
}
