import { sql, type Insertable, type Kysely, type Selectable, type Transaction } from 'kysely'
import type { DatabaseHandle } from './database.js'
import type { Database, JobStatus, JobsTable } from './schema.js'
import { toDbTime } from './time.js'

/**
 * All SQL on `{prefix}ai_jobs`. Small functions that take the database (or a transaction) first
 * and return a row or `undefined`; callers turn `undefined` into a 404.
 */
export type JobRow = Selectable<JobsTable>
export type NewJob = Insertable<JobsTable>
type Db = Kysely<Database> | Transaction<Database>

const bump = sql<number>`version + 1`

export async function insertJob(db: Db, job: NewJob): Promise<number> {
  const result = await db.insertInto('ai_jobs').values(job).executeTakeFirstOrThrow()
  // Kysely reports insertId as a bigint; ids stay far below 2^53 and the API returns numbers.
  return Number(result.insertId)
}

export async function findJob(db: Db, id: number): Promise<JobRow | undefined> {
  return db.selectFrom('ai_jobs').selectAll().where('id', '=', id).executeTakeFirst()
}

export async function findJobByKey(db: Db, idempotencyKey: string): Promise<JobRow | undefined> {
  return db.selectFrom('ai_jobs').selectAll().where('idempotency_key', '=', idempotencyKey).executeTakeFirst()
}

/** The newest job of this owner with the same input since `sinceMs`, for the dedupe window. */
export async function findRecentDuplicate(db: Db, ownerKey: string, inputHash: string, sinceMs: number): Promise<JobRow | undefined> {
  return db.selectFrom('ai_jobs').selectAll()
    .where('owner_key', '=', ownerKey)
    .where('created_at', '>=', toDbTime(sinceMs))
    .where('input_hash', '=', inputHash)
    // A failed or canceled job is not worth returning: the same input again means "try again".
    .where('status', 'not in', ['failed', 'canceled'])
    .orderBy('created_at', 'desc').orderBy('id', 'desc')
    .limit(1)
    .executeTakeFirst()
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
}

/**
 * Claims up to `limit` due jobs for this worker: they become `running` with a lease and one more
 * attempt. One short transaction; the provider is called after it commits.
 */
export async function claimJobs(handle: DatabaseHandle, options: ClaimOptions): Promise<JobRow[]> {
  if (options.limit <= 0) return []
  const now = toDbTime(options.nowMs)
  const leaseUntil = toDbTime(options.nowMs + options.leaseMs)
  const running = {
    status: 'running' as const,
    lease_owner: options.leaseOwner,
    lease_expires_at: leaseUntil,
    started_at: now,
    updated_at: now,
    attempts: sql<number>`attempts + 1`,
    version: bump,
  }
  if (handle.dialect === 'sqlite') {
    // SQLite has one writer at a time: a single UPDATE … RETURNING is the whole claim.
    return handle.db.updateTable('ai_jobs').set(running)
      .where('id', 'in', (eb) => eb.selectFrom('ai_jobs').select('id')
        .where('status', '=', 'pending').where('run_after', '<=', now)
        .orderBy('run_after').orderBy('id').limit(options.limit))
      .returningAll()
      .execute()
  }
  return retryOnLockConflict(() => handle.db.transaction().execute(async (trx) => {
    // SKIP LOCKED lets replicas claim side by side without waiting on each other's rows. The
    // `claim (status, run_after, id)` index matches this ORDER BY, so InnoDB locks only the rows
    // it returns; READ COMMITTED (set per connection) takes no gap locks that would stall INSERTs.
    const picked = await trx.selectFrom('ai_jobs').select('id')
      .where('status', '=', 'pending').where('run_after', '<=', now)
      .orderBy('run_after').orderBy('id').limit(options.limit)
      .forUpdate().skipLocked()
      .execute()
    if (picked.length === 0) return []
    const ids = picked.map((r) => r.id)
    await trx.updateTable('ai_jobs').set(running).where('id', 'in', ids).execute()
    return trx.selectFrom('ai_jobs').selectAll().where('id', 'in', ids).orderBy('run_after').orderBy('id').execute()
  }))
}

/** MySQL's deadlock (1213) and lock wait timeout (1205): the transaction was rolled back and may simply run again. */
export function isLockConflict(err: unknown): boolean {
  const e = err as { errno?: number; code?: string } | null
  return e?.errno === 1213 || e?.errno === 1205 || e?.code === 'ER_LOCK_DEADLOCK' || e?.code === 'ER_LOCK_WAIT_TIMEOUT'
}

/** Runs `fn` again after a lock conflict, up to 5 times, with full jitter (10 ms → 320 ms). */
export async function retryOnLockConflict<T>(fn: () => Promise<T>, random: () => number = Math.random): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn()
    } catch (err) {
      if (!isLockConflict(err) || attempt >= 4) throw err
      await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 10 * 2 ** (attempt + 1))))
    }
  }
}

/** Renews the leases this worker still holds; returns the ids it no longer holds. */
export async function renewLeases(db: Db, ids: number[], leaseOwner: string, nowMs: number, leaseMs: number): Promise<number[]> {
  if (ids.length === 0) return []
  await db.updateTable('ai_jobs')
    .set({ lease_expires_at: toDbTime(nowMs + leaseMs) })
    .where('id', 'in', ids).where('status', '=', 'running').where('lease_owner', '=', leaseOwner)
    .execute()
  const held = await db.selectFrom('ai_jobs').select('id')
    .where('id', 'in', ids).where('status', '=', 'running').where('lease_owner', '=', leaseOwner)
    .execute()
  const heldIds = new Set(held.map((r) => r.id))
  return ids.filter((id) => !heldIds.has(id))
}

export interface Outcome {
  status: 'succeeded' | 'failed'
  resultJson: string | null
  errorText: string | null
  providerMs: number | null
  workerMs: number | null
  inputTokens: number | null
  outputTokens: number | null
}

/**
 * Writes a terminal outcome, fenced on the lease: zero rows changed means another worker or a
 * cancel owns the job now, and the caller drops its result.
 */
export async function finishJob(db: Db, id: number, leaseOwner: string, outcome: Outcome, nowMs: number): Promise<boolean> {
  const r = await db.updateTable('ai_jobs').set({
    status: outcome.status,
    result_json: outcome.resultJson,
    error_text: outcome.errorText,
    provider_ms: outcome.providerMs,
    worker_ms: outcome.workerMs,
    input_tokens: outcome.inputTokens,
    output_tokens: outcome.outputTokens,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: toDbTime(nowMs),
    version: bump,
  }).where('id', '=', id).where('status', '=', 'running').where('lease_owner', '=', leaseOwner).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

export interface Requeue {
  runAfterMs: number
  errorText: string | null
  /** True when this run must not count as an attempt (shutdown, open breaker). */
  refundAttempt: boolean
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
    updated_at: toDbTime(nowMs),
    version: bump,
  }).where('id', '=', id).where('status', '=', 'running').where('lease_owner', '=', leaseOwner).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

export interface ReapResult {
  requeued: number
  failed: number
}

/**
 * Returns jobs whose lease expired (their worker died or stalled) to `pending`, or fails them
 * once `maxAttempts` claims are spent. The lease expiry is part of every WHERE, so a worker that
 * renews at the same moment keeps its job.
 */
export async function reapExpiredLeases(db: Db, nowMs: number, maxAttempts: number, backoffMs: number): Promise<ReapResult> {
  const now = toDbTime(nowMs)
  const failed = await db.updateTable('ai_jobs').set({
    status: 'failed',
    error_text: sql<string>`COALESCE(error_text, ${`lease expired after ${maxAttempts} attempts; the worker stopped responding`})`,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: now,
    version: bump,
  }).where('status', '=', 'running').where('lease_expires_at', '<', now).where('attempts', '>=', maxAttempts).executeTakeFirst()
  const requeued = await db.updateTable('ai_jobs').set({
    status: 'pending',
    run_after: toDbTime(nowMs + backoffMs),
    lease_owner: null,
    lease_expires_at: null,
    updated_at: now,
    version: bump,
  }).where('status', '=', 'running').where('lease_expires_at', '<', now).where('attempts', '<', maxAttempts).executeTakeFirst()
  return { requeued: Number(requeued.numUpdatedRows), failed: Number(failed.numUpdatedRows) }
}

/** Cancels a pending or running job; returns the job as it is afterwards, or undefined if missing. */
export async function cancelJob(db: Db, id: number, nowMs: number): Promise<{ changed: boolean; row: JobRow | undefined }> {
  const r = await db.updateTable('ai_jobs').set({
    status: 'canceled',
    lease_owner: null,
    lease_expires_at: null,
    updated_at: toDbTime(nowMs),
    version: bump,
  }).where('id', '=', id).where('status', 'in', ['pending', 'running']).executeTakeFirst()
  return { changed: Number(r.numUpdatedRows) === 1, row: await findJob(db, id) }
}

/** The admin retry: the one way a terminal job runs again, with its attempts reset. */
export async function retryJob(db: Db, id: number, nowMs: number): Promise<boolean> {
  const now = toDbTime(nowMs)
  const r = await db.updateTable('ai_jobs').set({
    status: 'pending',
    attempts: 0,
    dispatch_attempt: 0,
    run_after: now,
    result_json: null,
    error_text: null,
    webhook_ts: null,
    lease_owner: null,
    lease_expires_at: null,
    updated_at: now,
    version: bump,
  }).where('id', '=', id).where('status', 'in', ['succeeded', 'failed', 'canceled']).executeTakeFirst()
  return Number(r.numUpdatedRows) === 1
}

/** For /readyz. */
export async function pingDatabase(db: Db): Promise<void> {
  await sql`SELECT 1`.execute(db)
}
