/**
 * Creates `{prefix}ai_jobs`, or brings a seed-shaped table (made earlier by a WordPress plugin:
 * no `canceled` in the status ENUM, plain DATETIME, no queue columns) up to date in place.
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'

export interface MigrationContext {
  prefix: string
  dialect: 'mysql' | 'sqlite'
}

type Db = Kysely<any>

const STATUS_ENUM = "ENUM('pending','running','succeeded','failed','canceled')"

/** The queue columns of SPEC §3, as MySQL definitions, added to a seed table when missing. */
const MYSQL_ADDED_COLUMNS: [string, string][] = [
  ['owner_key', "VARCHAR(140) NOT NULL DEFAULT ''"],
  ['model', "VARCHAR(191) NOT NULL DEFAULT ''"],
  ['request_id', "VARCHAR(128) NOT NULL DEFAULT ''"],
  ['attempts', 'INT UNSIGNED NOT NULL DEFAULT 0'],
  ['run_after', 'DATETIME(3) NULL'],
  ['lease_owner', 'VARCHAR(64) NULL'],
  ['lease_expires_at', 'DATETIME(3) NULL'],
  ['started_at', 'DATETIME(3) NULL'],
  ['dispatched_at', 'DATETIME(3) NULL'],
  ['dispatch_attempt', 'INT UNSIGNED NOT NULL DEFAULT 0'],
  ['provider_ms', 'INT UNSIGNED NULL'],
  ['worker_ms', 'INT UNSIGNED NULL'],
  ['input_tokens', 'INT UNSIGNED NULL'],
  ['output_tokens', 'INT UNSIGNED NULL'],
  ['version', 'INT UNSIGNED NOT NULL DEFAULT 1'],
]

const MYSQL_INDEXES: [string, string][] = [
  ['status_created', '(status, created_at)'],
  ['user_created', '(user_id, created_at)'],
  ['input_hash', '(input_hash)'],
  ['owner_created', '(owner_key, created_at)'],
  // Matches the claim's `WHERE status = 'pending' AND run_after <= ? ORDER BY run_after, id`, so
  // InnoDB reads (and locks) only the rows it returns.
  ['claim', '(status, run_after, id)'],
  // The reaper's `WHERE status = 'running' AND lease_expires_at < ?`.
  ['lease', '(status, lease_expires_at)'],
]

async function mysqlColumns(db: Db, table: string): Promise<Map<string, { type: string; nullable: boolean; precision: number | null; dataType: string }>> {
  const rows = await sql<{ COLUMN_NAME: string; COLUMN_TYPE: string; IS_NULLABLE: string; DATETIME_PRECISION: number | null; DATA_TYPE: string }>`
    SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, DATETIME_PRECISION, DATA_TYPE
    FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table}`.execute(db)
  return new Map(rows.rows.map((r) => [r.COLUMN_NAME.toLowerCase(), { type: r.COLUMN_TYPE, nullable: r.IS_NULLABLE === 'YES', precision: r.DATETIME_PRECISION, dataType: r.DATA_TYPE.toLowerCase() }]))
}

async function mysqlIndexes(db: Db, table: string): Promise<Set<string>> {
  const rows = await sql<{ INDEX_NAME: string }>`
    SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
    WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table}`.execute(db)
  return new Set(rows.rows.map((r) => r.INDEX_NAME.toLowerCase()))
}

async function mysqlTableExists(db: Db, table: string): Promise<boolean> {
  const rows = await sql<{ n: number }>`
    SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table}`.execute(db)
  return Number(rows.rows[0]?.n ?? 0) > 0
}

async function upMysql(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_jobs`
  const t = sql.id(table)
  if (!(await mysqlTableExists(db, table))) {
    await sql`CREATE TABLE ${t} (
      id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
      user_id BIGINT UNSIGNED NOT NULL DEFAULT 0,
      status ${sql.raw(STATUS_ENUM)} NOT NULL DEFAULT 'pending',
      input_hash CHAR(64) NOT NULL,
      request_json LONGTEXT NOT NULL,
      result_json LONGTEXT NULL,
      error_text TEXT NULL,
      created_at DATETIME(3) NOT NULL,
      updated_at DATETIME(3) NOT NULL,
      idempotency_key VARCHAR(64) NOT NULL,
      webhook_ts DATETIME(3) NULL,
      ${sql.raw(MYSQL_ADDED_COLUMNS.map(([name, def]) => `${name} ${name === 'run_after' ? 'DATETIME(3) NOT NULL' : def}`).join(',\n      '))},
      PRIMARY KEY (id),
      UNIQUE KEY idempotency_key (idempotency_key),
      ${sql.raw(MYSQL_INDEXES.map(([name, cols]) => `KEY ${name} ${cols}`).join(',\n      '))}
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
    return
  }

  // An existing table: upgrade it step by step, checking information_schema before each change so
  // a half-finished earlier run (DDL is not transactional in MySQL) simply continues.
  let columns = await mysqlColumns(db, table)
  const status = columns.get('status')
  if (status && !status.type.includes("'canceled'")) {
    await sql`ALTER TABLE ${t} MODIFY status ${sql.raw(STATUS_ENUM)} NOT NULL DEFAULT 'pending'`.execute(db)
  }
  for (const name of ['created_at', 'updated_at', 'webhook_ts']) {
    const col = columns.get(name)
    if (!col) {
      await sql`ALTER TABLE ${t} ADD COLUMN ${sql.id(name)} DATETIME(3) ${sql.raw(name === 'webhook_ts' ? 'NULL' : 'NOT NULL DEFAULT CURRENT_TIMESTAMP(3)')}`.execute(db)
    } else if ((col.dataType === 'datetime' || col.dataType === 'timestamp') && (col.precision ?? 0) < 3) {
      await sql`ALTER TABLE ${t} MODIFY ${sql.id(name)} DATETIME(3) ${sql.raw(col.nullable ? 'NULL' : 'NOT NULL')}`.execute(db)
    }
  }
  const missing = MYSQL_ADDED_COLUMNS.filter(([name]) => !columns.has(name))
  if (missing.length > 0) {
    await sql`ALTER TABLE ${t} ${sql.raw(missing.map(([name, def]) => `ADD COLUMN ${name} ${def}`).join(', '))}`.execute(db)
  }
  columns = await mysqlColumns(db, table)

  // Rows written by the seed get the values the queue needs.
  await sql`UPDATE ${t} SET owner_key = CONCAT('u:', user_id) WHERE owner_key = ''`.execute(db)
  await sql`UPDATE ${t} SET run_after = created_at WHERE run_after IS NULL`.execute(db)
  await sql`UPDATE ${t} SET model = COALESCE(JSON_UNQUOTE(JSON_EXTRACT(request_json, '$.model')), '')
    WHERE model = '' AND JSON_VALID(request_json)`.execute(db)
  // A seed job left `running` has no lease; an expired one lets the reaper return it to the queue.
  await sql`UPDATE ${t} SET lease_expires_at = UTC_TIMESTAMP(3) WHERE status = 'running' AND lease_expires_at IS NULL`.execute(db)
  if (columns.get('run_after')?.nullable) {
    await sql`ALTER TABLE ${t} MODIFY run_after DATETIME(3) NOT NULL`.execute(db)
  }

  const indexes = await mysqlIndexes(db, table)
  if (!indexes.has('idempotency_key')) {
    await sql`ALTER TABLE ${t} ADD UNIQUE KEY idempotency_key (idempotency_key)`.execute(db)
  }
  const add = MYSQL_INDEXES.filter(([name]) => !indexes.has(name))
  if (add.length > 0) {
    await sql`ALTER TABLE ${t} ${sql.raw(add.map(([name, cols]) => `ADD KEY ${name} ${cols}`).join(', '))}`.execute(db)
  }
}

async function upSqlite(db: Db, prefix: string): Promise<void> {
  const table = `${prefix}ai_jobs`
  const t = sql.id(table)
  await sql`CREATE TABLE IF NOT EXISTS ${t} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','running','succeeded','failed','canceled')),
    input_hash TEXT NOT NULL,
    request_json TEXT NOT NULL,
    result_json TEXT NULL,
    error_text TEXT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    webhook_ts TEXT NULL,
    owner_key TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    request_id TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    run_after TEXT NOT NULL,
    lease_owner TEXT NULL,
    lease_expires_at TEXT NULL,
    started_at TEXT NULL,
    dispatched_at TEXT NULL,
    dispatch_attempt INTEGER NOT NULL DEFAULT 0,
    provider_ms INTEGER NULL,
    worker_ms INTEGER NULL,
    input_tokens INTEGER NULL,
    output_tokens INTEGER NULL,
    version INTEGER NOT NULL DEFAULT 1
  )`.execute(db)
  const idx = (name: string, cols: string, unique = false) =>
    sql`CREATE ${sql.raw(unique ? 'UNIQUE ' : '')}INDEX IF NOT EXISTS ${sql.id(`${prefix}ai_jobs_${name}`)} ON ${t} ${sql.raw(cols)}`.execute(db)
  await idx('idempotency_key', '(idempotency_key)', true)
  for (const [name, cols] of MYSQL_INDEXES) await idx(name, cols)
}

export function migration(ctx: MigrationContext) {
  return {
    name: '0001_ai_jobs',
    up: (db: Db) => (ctx.dialect === 'mysql' ? upMysql(db, ctx.prefix) : upSqlite(db, ctx.prefix)),
  }
}
