/**
 * `{prefix}ai_webhook_receipts`: every verified webhook delivery that reached a job, kept as long
 * as the job is. A delivery that completed a job once never completes it again, even after an
 * admin retry and long after the store's 10-minute replay guard has forgotten it (the seed scheme
 * signs no timestamp, so its bodies can be replayed; SPEC §5).
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

async function upMysql(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_webhook_receipts`
  const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table}`.execute(db)
  if (Number(found.rows[0]?.n ?? 0) > 0) return
  await sql`CREATE TABLE ${sql.id(table)} (
    replay_key CHAR(64) NOT NULL,
    job_id BIGINT UNSIGNED NOT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (replay_key),
    KEY job_id (job_id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
}

async function upSqlite(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_webhook_receipts`
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(table)} (
    replay_key TEXT NOT NULL PRIMARY KEY,
    job_id INTEGER NOT NULL,
    created_at TEXT NOT NULL
  )`.execute(db)
  await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${table}_job_id`)} ON ${sql.id(table)} (job_id)`.execute(db)
}

export function migration(ctx: MigrationContext) {
  return {
    name: '0002_webhook_receipts',
    up: (db: Db) => (ctx.dialect === 'mysql' ? upMysql(db, ctx.prefix) : upSqlite(db, ctx.prefix)),
  }
}
