/**
 * Fair claims (SPEC §8): each job's `priority` (0 interactive, 1 bulk), the claim index
 * `fair_claim (status, priority, owner_key, run_after, id)` that the claim walks owner by owner,
 * and `{prefix}ai_claim_locks`, a fixed set of rows a claim locks for the owners it takes jobs of,
 * so replicas never together pass JOB_OWNER_CONCURRENCY. The old `claim (status, run_after, id)`
 * index no longer matches any statement and is dropped (one index less to write per change).
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

/** Rows of `{prefix}ai_claim_locks`: owners hash onto them (two owners on one row only wait on each other). */
const LOCK_ROWS = 256

async function upMysql(db: Db, prefix: string): Promise<void> {
  const jobs = `${prefix}ai_jobs`
  const t = sql.id(jobs)
  const columns = await sql<{ COLUMN_NAME: string }>`SELECT COLUMN_NAME FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${jobs}`.execute(db)
  if (!columns.rows.some((r) => r.COLUMN_NAME.toLowerCase() === 'priority')) {
    await sql`ALTER TABLE ${t} ADD COLUMN priority TINYINT UNSIGNED NOT NULL DEFAULT 0`.execute(db)
    // Jobs still queued keep the priority they were created with (an encrypted request reads as interactive).
    await sql`UPDATE ${t} SET priority = 1 WHERE status = 'pending' AND JSON_VALID(request_json)
      AND JSON_UNQUOTE(JSON_EXTRACT(request_json, '$.priority')) = 'bulk'`.execute(db)
  }
  const indexes = await sql<{ INDEX_NAME: string }>`SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${jobs}`.execute(db)
  const have = new Set(indexes.rows.map((r) => r.INDEX_NAME.toLowerCase()))
  const alter: string[] = []
  if (!have.has('fair_claim')) alter.push('ADD KEY fair_claim (status, priority, owner_key, run_after, id)')
  if (have.has('claim')) alter.push('DROP KEY claim')
  if (alter.length > 0) await sql`ALTER TABLE ${t} ${sql.raw(alter.join(', '))}`.execute(db)

  const locks = `${prefix}ai_claim_locks`
  const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${locks}`.execute(db)
  if (Number(found.rows[0]?.n ?? 0) === 0) {
    await sql`CREATE TABLE ${sql.id(locks)} (
      bucket SMALLINT UNSIGNED NOT NULL,
      PRIMARY KEY (bucket)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
  }
  const rows = Array.from({ length: LOCK_ROWS }, (_, i) => sql`(${i})`)
  await sql`INSERT IGNORE INTO ${sql.id(locks)} (bucket) VALUES ${sql.join(rows)}`.execute(db)
}

async function upSqlite(db: Db, prefix: string): Promise<void> {
  const jobs = `${prefix}ai_jobs`
  const t = sql.id(jobs)
  const columns = await sql<{ name: string }>`SELECT name FROM pragma_table_info(${jobs})`.execute(db)
  if (!columns.rows.some((r) => r.name === 'priority')) {
    await sql`ALTER TABLE ${t} ADD COLUMN priority INTEGER NOT NULL DEFAULT 0`.execute(db)
    await sql`UPDATE ${t} SET priority = 1 WHERE status = 'pending' AND json_valid(request_json)
      AND json_extract(request_json, '$.priority') = 'bulk'`.execute(db)
  }
  await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${jobs}_fair_claim`)} ON ${t} (status, priority, owner_key, run_after, id)`.execute(db)
  await sql`DROP INDEX IF EXISTS ${sql.id(`${jobs}_claim`)}`.execute(db)
  // SQLite has one writer at a time: the claim's transaction is the lock; the table is kept for
  // the same schema in both dialects.
  const locks = `${prefix}ai_claim_locks`
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(locks)} (bucket INTEGER NOT NULL PRIMARY KEY)`.execute(db)
  const rows = Array.from({ length: LOCK_ROWS }, (_, i) => sql`(${i})`)
  await sql`INSERT OR IGNORE INTO ${sql.id(locks)} (bucket) VALUES ${sql.join(rows)}`.execute(db)
}

export function migration(ctx: MigrationContext) {
  return {
    name: '0005_fair_claims',
    up: (db: Db) => (ctx.dialect === 'mysql' ? upMysql(db, ctx.prefix) : upSqlite(db, ctx.prefix)),
  }
}
