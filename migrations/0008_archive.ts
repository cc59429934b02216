/**
 * The archive's progress (SPEC §12): `{prefix}ai_archive_runs`, one row per batch of jobs moved to
 * an archive file. A batch is recorded `writing` before its file is written, `written` once the
 * file is durable, and `done` in the transaction that deletes its rows, so a run killed at any
 * moment can be finished by the next one without losing or doubling a job.
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

async function upMysql(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_archive_runs`
  const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table}`.execute(db)
  if (Number(found.rows[0]?.n ?? 0) > 0) return
  await sql`CREATE TABLE ${sql.id(table)} (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    from_id BIGINT UNSIGNED NOT NULL,
    to_id BIGINT UNSIGNED NOT NULL,
    file VARCHAR(512) NOT NULL,
    state VARCHAR(16) NOT NULL,
    rows_archived INT UNSIGNED NOT NULL DEFAULT 0,
    cutoff_at DATETIME(3) NOT NULL,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    UNIQUE KEY file (file),
    KEY state (state)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
}

async function upSqlite(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_archive_runs`
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(table)} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    from_id INTEGER NOT NULL,
    to_id INTEGER NOT NULL,
    file TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    rows_archived INTEGER NOT NULL DEFAULT 0,
    cutoff_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  )`.execute(db)
  await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${table}_state`)} ON ${sql.id(table)} (state)`.execute(db)
}

export function migration(ctx: MigrationContext) {
  return {
    name: '0008_archive',
    up: (db: Db) => (ctx.dialect === 'mysql' ? upMysql(db, ctx.prefix) : upSqlite(db, ctx.prefix)),
  }
}
