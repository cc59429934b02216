/**
 * `{prefix}ai_events`: the outbox of events to WordPress (SPEC §10). Every terminal transition of
 * a job writes one row in the transaction that makes the job terminal, so an event is never lost
 * between the two; a sender on any replica claims due rows (`claim`, with SKIP LOCKED), POSTs
 * them to AI_EVENTS_URL, and records the outcome. `job_version` is the job's `version` right
 * after the transition: one row per transition (`job_transition` is unique), so an admin retry
 * that finishes again adds a second row with its own `webhook_id`.
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

async function upMysql(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_events`
  const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table}`.execute(db)
  if (Number(found.rows[0]?.n ?? 0) > 0) return
  // `lease_token` fences a sender's write to the claim it made; `next_attempt_at` doubles as the
  // claim's expiry (a claim moves it past the request timeout), so a sender that dies mid-send
  // leaves a row that is simply due again. `give_up_at` ends the retries: 24 h after the
  // transition, or after an admin's resend. `last_error` is bounded (VARCHAR(1000)): a receiver's
  // error page is cut, never stored whole.
  await sql`CREATE TABLE ${sql.id(table)} (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    job_id BIGINT UNSIGNED NOT NULL,
    job_version INT UNSIGNED NOT NULL,
    type VARCHAR(20) NOT NULL,
    webhook_id VARCHAR(64) NOT NULL,
    status ENUM('pending','delivered','failed') NOT NULL DEFAULT 'pending',
    attempts INT UNSIGNED NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(3) NOT NULL,
    give_up_at DATETIME(3) NOT NULL,
    lease_token VARCHAR(64) NULL,
    last_error VARCHAR(1000) NULL,
    last_status SMALLINT UNSIGNED NULL,
    created_at DATETIME(3) NOT NULL,
    delivered_at DATETIME(3) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY webhook_id (webhook_id),
    UNIQUE KEY job_transition (job_id, job_version),
    KEY claim (status, next_attempt_at, id),
    KEY status_id (status, id)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
}

async function upSqlite(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_events`
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(table)} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    job_version INTEGER NOT NULL,
    type TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','delivered','failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    give_up_at TEXT NOT NULL,
    lease_token TEXT NULL,
    last_error TEXT NULL,
    last_status INTEGER NULL,
    created_at TEXT NOT NULL,
    delivered_at TEXT NULL
  )`.execute(db)
  await sql`CREATE UNIQUE INDEX IF NOT EXISTS ${sql.id(`${table}_webhook_id`)} ON ${sql.id(table)} (webhook_id)`.execute(db)
  await sql`CREATE UNIQUE INDEX IF NOT EXISTS ${sql.id(`${table}_job_transition`)} ON ${sql.id(table)} (job_id, job_version)`.execute(db)
  await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${table}_claim`)} ON ${sql.id(table)} (status, next_attempt_at, id)`.execute(db)
  await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${table}_status_id`)} ON ${sql.id(table)} (status, id)`.execute(db)
}

export function migration(ctx: MigrationContext) {
  return {
    name: '0006_events_outbox',
    up: (db: Db) => (ctx.dialect === 'mysql' ? upMysql(db, ctx.prefix) : upSqlite(db, ctx.prefix)),
  }
}
