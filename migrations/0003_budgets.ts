/**
 * Token budgets (SPEC §8): `{prefix}ai_usage`, the settled tokens per UTC day and owner, which
 * archive and erase leave alone; and on `{prefix}ai_jobs`, each job's open reservation and the
 * tokens its provider calls cost so far.
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

async function upMysql(db: Db, prefix: string): Promise<void> {
  const usage = `${prefix}ai_usage`
  const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${usage}`.execute(db)
  if (Number(found.rows[0]?.n ?? 0) === 0) {
    await sql`CREATE TABLE ${sql.id(usage)} (
      day DATE NOT NULL,
      owner_key VARCHAR(140) NOT NULL,
      user_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
      tokens BIGINT UNSIGNED NOT NULL DEFAULT 0,
      jobs INT UNSIGNED NOT NULL DEFAULT 0,
      unmetered_calls INT UNSIGNED NOT NULL DEFAULT 0,
      PRIMARY KEY (day, owner_key),
      KEY owner_day (owner_key, day)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
  }
  const jobs = `${prefix}ai_jobs`
  const columns = await sql<{ COLUMN_NAME: string }>`SELECT COLUMN_NAME FROM information_schema.COLUMNS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${jobs}`.execute(db)
  const have = new Set(columns.rows.map((r) => r.COLUMN_NAME.toLowerCase()))
  const add: string[] = []
  if (!have.has('reserved_tokens')) add.push('ADD COLUMN reserved_tokens INT UNSIGNED NOT NULL DEFAULT 0')
  if (!have.has('billed_tokens')) add.push('ADD COLUMN billed_tokens INT UNSIGNED NOT NULL DEFAULT 0')
  if (add.length > 0) await sql`ALTER TABLE ${sql.id(jobs)} ${sql.raw(add.join(', '))}`.execute(db)
}

async function upSqlite(db: Db, prefix: string): Promise<void> {
  const usage = `${prefix}ai_usage`
  await sql`CREATE TABLE IF NOT EXISTS ${sql.id(usage)} (
    day TEXT NOT NULL,
    owner_key TEXT NOT NULL,
    user_id INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    jobs INTEGER NOT NULL DEFAULT 0,
    unmetered_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, owner_key)
  )`.execute(db)
  await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${usage}_owner_day`)} ON ${sql.id(usage)} (owner_key, day)`.execute(db)
  const jobs = `${prefix}ai_jobs`
  const columns = await sql<{ name: string }>`SELECT name FROM pragma_table_info(${jobs})`.execute(db)
  const have = new Set(columns.rows.map((r) => r.name))
  if (!have.has('reserved_tokens')) await sql`ALTER TABLE ${sql.id(jobs)} ADD COLUMN reserved_tokens INTEGER NOT NULL DEFAULT 0`.execute(db)
  if (!have.has('billed_tokens')) await sql`ALTER TABLE ${sql.id(jobs)} ADD COLUMN billed_tokens INTEGER NOT NULL DEFAULT 0`.execute(db)
}

export function migration(ctx: MigrationContext) {
  return {
    name: '0003_budgets',
    up: (db: Db) => (ctx.dialect === 'mysql' ? upMysql(db, ctx.prefix) : upSqlite(db, ctx.prefix)),
  }
}
