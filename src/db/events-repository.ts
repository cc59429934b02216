import { randomBytes } from 'node:crypto'
import { sql, type Kysely, type Selectable, type Transaction } from 'kysely'
import type { DatabaseHandle } from './database.js'
import { TERMINAL_STATUSES, type Database, type EventStatus, type EventType, type EventsTable } from './schema.js'
import { toDbTime } from './time.js'

/**
 * All SQL on `{prefix}ai_events`, the outbox of events to WordPress (SPEC §10). Rows are added by
 * the terminal transitions in jobs-repository.ts, inside their own transaction; the sender
 * claims, sends and settles them here.
 */
export type EventRow = Selectable<EventsTable>
type Db = Kysely<Database> | Transaction<Database>

/** Failed tries are retried for this long after the transition (or the admin's resend): 24 h (SPEC §10). */
export const EVENT_RETRY_WINDOW_MS = 24 * 3600_000

/** `last_error` is VARCHAR(1000). */
export const LAST_ERROR_MAX_CHARS = 1000

/** A Standard Webhooks message id: `msg_` and 144 random bits, printable ASCII as receivers require. */
export function newWebhookId(): string {
  return `msg_${randomBytes(18).toString('base64url')}`
}

/**
 * Adds one pending event for each of `ids` that is terminal now, announcing the transition that
 * made it so: its type from the status, `job_version` from the row as this transaction wrote it.
 * Called inside the transition's own transaction (after its UPDATE), so the event commits or rolls
 * back with it; MySQL reads the rows this transaction has just locked and written. A transition
 * already announced (same job and version) is skipped, never an error that would undo the write.
 */
export async function recordTerminalEvents(trx: Db, ids: Iterable<number>, nowMs: number): Promise<number> {
  const list = [...new Set(ids)]
  if (list.length === 0) return 0
  const rows = await trx.selectFrom('ai_jobs').select(['id', 'version', 'status'])
    .where('id', 'in', list).where('status', 'in', TERMINAL_STATUSES).execute()
  if (rows.length === 0) return 0
  const now = toDbTime(nowMs)
  await trx.insertInto('ai_events').values(rows.map((r) => ({
    job_id: Number(r.id),
    job_version: Number(r.version),
    type: `job.${r.status}` as EventType,
    webhook_id: newWebhookId(),
    status: 'pending' as const,
    attempts: 0,
    next_attempt_at: now,
    give_up_at: toDbTime(nowMs + EVENT_RETRY_WINDOW_MS),
    created_at: now,
  }))).orIgnore().execute()
  return rows.length
}

/**
 * The claim's candidates: due pending events, oldest due first, and only the earliest open event
 * of each job, so a job's later event never overtakes its earlier one (that one must be delivered
 * or failed first). A try in flight is a pending row whose `next_attempt_at` the claim moved past
 * its timeout, so it blocks the job's later events too. Exported so a test can EXPLAIN it (the
 * `claim (status, next_attempt_at, id)` index, read in order).
 */
export function claimCandidatesQuery(db: Db, nowMs: number, limit: number) {
  // The inner alias is written as text: the table-prefix plugin would prefix a reference `earlier.…`.
  const events = sql.table('ai_events')
  return db.selectFrom('ai_events').select('id')
    .where('status', '=', 'pending').where('next_attempt_at', '<=', toDbTime(nowMs))
    .where(sql<boolean>`NOT EXISTS (SELECT 1 FROM ${events} AS earlier WHERE earlier.job_id = ${sql.ref('ai_events.job_id')} AND earlier.status = 'pending' AND earlier.id < ${sql.ref('ai_events.id')})`)
    .orderBy('next_attempt_at').orderBy('id').limit(limit)
}

export interface EventClaim {
  nowMs: number
  limit: number
  /** How long a claimed try owns its row: past the request timeout, then the row is due again. */
  leaseMs: number
  /** This claim's token; the outcome of each try is written only while the row still carries it. */
  token: string
}

/**
 * Claims up to `limit` due events for one sender: each gets one more attempt, this claim's token,
 * and a `next_attempt_at` past the try's timeout (a sender that dies mid-send leaves a row that
 * is due again then, and another replica sends it). One short transaction; the POSTs follow.
 */
export async function claimEvents(handle: DatabaseHandle, claim: EventClaim): Promise<EventRow[]> {
  if (claim.limit <= 0) return []
  const set = {
    attempts: sql<number>`attempts + 1`,
    next_attempt_at: toDbTime(claim.nowMs + claim.leaseMs),
    lease_token: claim.token,
  }
  if (handle.dialect === 'sqlite') {
    // One writer at a time: the UPDATE … RETURNING is the whole claim.
    const rows = await handle.db.updateTable('ai_events').set(set)
      .where('id', 'in', (eb) => claimCandidatesQuery(eb as unknown as Db, claim.nowMs, claim.limit) as never)
      .returningAll().execute()
    return rows.sort((a, b) => Number(a.id) - Number(b.id))
  }
  return handle.db.transaction().execute(async (trx) => {
    // SKIP LOCKED: replicas claim side by side, each event goes to one of them. The index matches
    // the ORDER BY, so InnoDB locks only the rows it returns; the NOT EXISTS reads the job's
    // earlier events without locking them (a plain subquery of a locking read takes no locks).
    const picked = await claimCandidatesQuery(trx, claim.nowMs, claim.limit).forUpdate().skipLocked().execute()
    if (picked.length === 0) return []
    const ids = picked.map((r) => Number(r.id))
    await trx.updateTable('ai_events').set(set).where('id', 'in', ids).execute()
    return trx.selectFrom('ai_events').selectAll().where('id', 'in', ids).orderBy('id').execute()
  })
}

/** What one try came to, written only while the row still carries the try's claim token. */
export type TryOutcome =
  | { kind: 'delivered'; status: number }
  | { kind: 'retry'; nextAttemptMs: number; error: string; status: number | null }
  | { kind: 'failed'; error: string; status: number | null }

export async function settleTry(db: Db, id: number, token: string, outcome: TryOutcome, nowMs: number): Promise<boolean> {
  const base = { lease_token: null, last_status: outcome.status }
  const values = outcome.kind === 'delivered'
    ? { ...base, status: 'delivered' as const, delivered_at: toDbTime(nowMs), last_error: null }
    : outcome.kind === 'retry'
      ? { ...base, next_attempt_at: toDbTime(outcome.nextAttemptMs), last_error: outcome.error.slice(0, LAST_ERROR_MAX_CHARS) }
      : { ...base, status: 'failed' as const, last_error: outcome.error.slice(0, LAST_ERROR_MAX_CHARS) }
  const r = await db.updateTable('ai_events').set(values)
    .where('id', '=', id).where('status', '=', 'pending').where('lease_token', '=', token).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

/**
 * The admin resend: the event is pending and due now, its attempts start over and it is retried
 * for another 24 h from now. A try in flight loses its claim, and its outcome is dropped.
 */
export async function resendEvent(db: Db, id: number, nowMs: number): Promise<EventRow | undefined> {
  await db.updateTable('ai_events').set({
    status: 'pending', attempts: 0, next_attempt_at: toDbTime(nowMs), give_up_at: toDbTime(nowMs + EVENT_RETRY_WINDOW_MS), lease_token: null, last_error: null, last_status: null, delivered_at: null,
  }).where('id', '=', id).executeTakeFirst()
  return findEvent(db, id)
}

export async function findEvent(db: Db, id: number): Promise<EventRow | undefined> {
  return db.selectFrom('ai_events').selectAll().where('id', '=', id).executeTakeFirst()
}

/** Newest first by id, with a keyset cursor (`beforeId`); on `status_id (status, id)` when filtered. */
export async function listEvents(db: Db, filter: { status?: EventStatus; beforeId?: number; limit: number }): Promise<EventRow[]> {
  let q = db.selectFrom('ai_events').selectAll()
  if (filter.status !== undefined) q = q.where('status', '=', filter.status)
  if (filter.beforeId !== undefined) q = q.where('id', '<', filter.beforeId)
  return q.orderBy('id', 'desc').limit(filter.limit).execute()
}

/** The events of one job, oldest first. */
export async function eventsOfJob(db: Db, jobId: number): Promise<EventRow[]> {
  return db.selectFrom('ai_events').selectAll().where('job_id', '=', jobId).orderBy('id').execute()
}

/** The outbox by status, for /admin/stats (counted on the `status_id` index). */
export async function countEvents(db: Db): Promise<Record<EventStatus, number>> {
  const rows = await db.selectFrom('ai_events').select(['status', sql<number>`COUNT(*)`.as('n')]).groupBy('status').execute()
  const counts: Record<EventStatus, number> = { pending: 0, delivered: 0, failed: 0 }
  for (const r of rows) counts[r.status] = Number(r.n)
  return counts
}

/**
 * Deletes delivered events created before `beforeMs`, at most `limit` (oldest first), so the
 * outbox does not grow with the job history. Failed ones stay for the admin to resend.
 */
export async function pruneDelivered(db: Db, beforeMs: number, limit: number): Promise<number> {
  const old = await db.selectFrom('ai_events').select('id')
    .where('status', '=', 'delivered').where('created_at', '<', toDbTime(beforeMs)).orderBy('id').limit(limit).execute()
  if (old.length === 0) return 0
  const r = await db.deleteFrom('ai_events').where('id', 'in', old.map((o) => Number(o.id))).where('status', '=', 'delivered').executeTakeFirst()
  return Number(r.numDeletedRows)
}
