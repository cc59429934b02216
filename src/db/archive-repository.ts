import { sql, type Kysely, type Transaction } from 'kysely'
import type { DatabaseHandle } from './database.js'
import type { JobRow } from './jobs-repository.js'
import type { ArchiveBatchState, Database } from './schema.js'
import { toDbTime } from './time.js'

/**
 * The SQL of the data lifecycle (SPEC §12): the archive's batches and progress in
 * `{prefix}ai_archive_runs`, and the privacy export and erase of one user's jobs.
 */
type Db = Kysely<Database> | Transaction<Database>

export type ArchiveBatchRow = Awaited<ReturnType<typeof unfinishedArchiveBatches>>[number]

const TERMINAL = ['succeeded', 'failed', 'canceled'] as const

/**
 * The highest id of a job created before the cut-off (read on the `created (created_at, id)`
 * index). A job's `updated_at` is never before its `created_at`, so no job above this id can be
 * old enough to archive: the batches walk the primary key up to it and never scan the recent
 * part of the table.
 */
export async function highestIdCreatedBefore(db: Db, cutoffMs: number): Promise<number> {
  const row = await db.selectFrom('ai_jobs').select(sql<number | null>`MAX(id)`.as('id'))
    .where('created_at', '<', toDbTime(cutoffMs)).executeTakeFirst()
  return Number(row?.id ?? 0)
}

/**
 * The next `limit` archivable rows after `afterId` (up to `maxId`), by id, whole: terminal jobs
 * last changed before the cut-off. Only old, finished rows match, which no worker touches.
 */
export async function listArchivable(db: Db, afterId: number, maxId: number, cutoffMs: number, limit: number): Promise<JobRow[]> {
  return db.selectFrom('ai_jobs').selectAll()
    .where('id', '>', afterId).where('id', '<=', maxId)
    .where('status', 'in', TERMINAL).where('updated_at', '<', toDbTime(cutoffMs))
    .orderBy('id').limit(limit).execute()
}

/** Batches a run left unfinished (killed, or failed), oldest first. */
export async function unfinishedArchiveBatches(db: Db) {
  return db.selectFrom('ai_archive_runs').select(['id', 'from_id', 'to_id', 'file', 'state', 'cutoff_at'])
    .where('state', 'in', ['writing', 'written']).orderBy('id').execute()
}

export async function insertArchiveBatch(db: Db, batch: { fromId: number; toId: number; file: string; cutoffMs: number; nowMs: number }): Promise<number> {
  const at = toDbTime(batch.nowMs)
  const r = await db.insertInto('ai_archive_runs').values({
    from_id: batch.fromId, to_id: batch.toId, file: batch.file, state: 'writing', cutoff_at: toDbTime(batch.cutoffMs), created_at: at, updated_at: at,
  }).executeTakeFirstOrThrow()
  return Number(r.insertId)
}

export async function setArchiveBatchState(db: Db, id: number, state: ArchiveBatchState, nowMs: number, rowsArchived?: number): Promise<void> {
  await db.updateTable('ai_archive_runs')
    .set({ state, updated_at: toDbTime(nowMs), ...(rowsArchived !== undefined ? { rows_archived: rowsArchived } : {}) })
    .where('id', '=', id).execute()
}

/** Every archive file a batch finished writing (`written` or `done`): where erase looks for a user's lines. */
export async function archiveFiles(db: Db): Promise<string[]> {
  const rows = await db.selectFrom('ai_archive_runs').select('file').where('state', 'in', ['written', 'done']).orderBy('id').execute()
  return rows.map((r) => r.file)
}

/**
 * The `version` of each of these jobs that still exists, locked until the transaction ends (MySQL;
 * SQLite writers are serialized anyway), so what the archive deletes is what its file holds.
 */
export async function lockJobVersions(trx: Transaction<Database>, dialect: DatabaseHandle['dialect'], ids: readonly number[]): Promise<Map<number, number>> {
  if (ids.length === 0) return new Map()
  let q = trx.selectFrom('ai_jobs').select(['id', 'version']).where('id', 'in', ids)
  if (dialect === 'mysql') q = q.forUpdate()
  const rows = await q.execute()
  return new Map(rows.map((r) => [Number(r.id), Number(r.version)]))
}

/** The current `version` of each of these jobs that exists (no lock). */
export async function jobVersions(db: Db, ids: readonly number[]): Promise<Map<number, number>> {
  if (ids.length === 0) return new Map()
  const rows = await db.selectFrom('ai_jobs').select(['id', 'version']).where('id', 'in', ids).execute()
  return new Map(rows.map((r) => [Number(r.id), Number(r.version)]))
}

export async function findJobsByIds(db: Db, ids: readonly number[]): Promise<JobRow[]> {
  if (ids.length === 0) return []
  return db.selectFrom('ai_jobs').selectAll().where('id', 'in', ids).orderBy('id').execute()
}

/**
 * Deletes jobs by id with their webhook receipts (kept only to refuse a delivery twice: a job
 * that is gone has nothing to complete). `{prefix}ai_usage` is left alone: budgets count tokens
 * already spent.
 */
export async function deleteJobsById(trx: Db, ids: readonly number[]): Promise<number> {
  if (ids.length === 0) return 0
  await trx.deleteFrom('ai_webhook_receipts').where('job_id', 'in', ids).execute()
  const r = await trx.deleteFrom('ai_jobs').where('id', 'in', ids).executeTakeFirst()
  return Number(r.numDeletedRows)
}

/** One page of a WordPress user's jobs, oldest first (the privacy export), read on `user_created`. */
export async function listUserJobs(db: Db, userId: number, offset: number, limit: number): Promise<JobRow[]> {
  return db.selectFrom('ai_jobs').selectAll().where('user_id', '=', userId)
    .orderBy('created_at').orderBy('id').limit(limit).offset(offset).execute()
}

/** How many jobs of a user the table holds (a range of `user_created`). */
export async function countUserJobs(db: Db, userId: number): Promise<number> {
  const row = await db.selectFrom('ai_jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('user_id', '=', userId).executeTakeFirst()
  return Number(row?.n ?? 0)
}

/** The first `limit` of a user's jobs by id, whole (the erase hook may need any column). */
export async function firstUserJobs(db: Db, userId: number, limit: number): Promise<JobRow[]> {
  return db.selectFrom('ai_jobs').selectAll().where('user_id', '=', userId).orderBy('id').limit(limit).execute()
}

const localLocks = new Map<string, Promise<void>>()

/**
 * Runs `fn` holding a named lock: on MySQL/MariaDB a `GET_LOCK` on a connection of its own
 * (scoped by database and prefix like the migration lock, hashed to stay under 64 characters),
 * which the server frees itself if this process dies; on SQLite, one replica by definition, a lock
 * within this process. Waits up to `waitSeconds` (0: not at all) and answers `undefined` when the
 * lock stayed taken.
 */
export async function withNamedLock<T>(handle: DatabaseHandle, name: string, waitSeconds: number, fn: () => Promise<T>): Promise<{ value: T } | undefined> {
  if (handle.dialect === 'sqlite') {
    const key = `${handle.prefix}:${name}`
    const deadline = Date.now() + waitSeconds * 1000
    for (;;) {
      const held = localLocks.get(key)
      if (!held) break
      if (Date.now() >= deadline) return undefined
      await Promise.race([held, new Promise((r) => setTimeout(r, Math.max(1, Math.min(200, deadline - Date.now()))))])
    }
    let release!: () => void
    localLocks.set(key, new Promise<void>((r) => { release = r }))
    try {
      return { value: await fn() }
    } finally {
      localLocks.delete(key)
      release()
    }
  }
  return handle.db.connection().execute(async (conn) => {
    const lockName = sql`CONCAT('wp-ai-gateway:', ${name}, ':', SHA1(CONCAT(DATABASE(), ':', ${handle.prefix})))`
    const got = await sql<{ ok: number | null }>`SELECT GET_LOCK(${lockName}, ${waitSeconds}) AS ok`.execute(conn)
    if (Number(got.rows[0]?.ok) !== 1) return undefined
    try {
      return { value: await fn() }
    } finally {
      await sql`SELECT RELEASE_LOCK(${lockName})`.execute(conn)
    }
  })
}
