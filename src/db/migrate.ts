import { sql, type Kysely } from 'kysely'
import { migrations } from '../../migrations/index.js'
import type { DatabaseHandle } from './database.js'
import { toDbTime } from './time.js'

export interface MigrationReport {
  applied: string[]
  alreadyApplied: string[]
}

// Longer than any migration should take on a large seed table; a replica that waits this long
// for another one's lock gives up with an error instead of starting on a half-migrated table.
const LOCK_WAIT_SECONDS = 600

/**
 * Runs the pending migrations. On MySQL/MariaDB one connection holds a GET_LOCK for the whole
 * run, so replicas starting together migrate once; MySQL releases the lock itself if this
 * process dies. Applied names are kept in `{prefix}ai_gateway_migrations`.
 */
export async function runMigrations(handle: DatabaseHandle, now: () => number = Date.now): Promise<MigrationReport> {
  const ctx = { prefix: handle.prefix, dialect: handle.dialect }
  const book = sql.id(`${handle.prefix}ai_gateway_migrations`)
  const run = async (db: Kysely<any>): Promise<MigrationReport> => {
    if (handle.dialect === 'mysql') {
      // information_schema rather than IF NOT EXISTS (SPEC §3), checked under the lock.
      const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${`${handle.prefix}ai_gateway_migrations`}`.execute(db)
      if (Number(found.rows[0]?.n ?? 0) === 0) {
        await sql`CREATE TABLE ${book} (name VARCHAR(191) NOT NULL PRIMARY KEY, applied_at DATETIME(3) NOT NULL)
          ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
      }
    } else {
      await sql`CREATE TABLE IF NOT EXISTS ${book} (name TEXT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)`.execute(db)
    }
    const done = new Set((await sql<{ name: string }>`SELECT name FROM ${book}`.execute(db)).rows.map((r) => r.name))
    const report: MigrationReport = { applied: [], alreadyApplied: [] }
    for (const factory of migrations) {
      const m = factory(ctx)
      if (done.has(m.name)) {
        report.alreadyApplied.push(m.name)
        continue
      }
      await m.up(db)
      await sql`INSERT INTO ${book} (name, applied_at) VALUES (${m.name}, ${toDbTime(now())})`.execute(db)
      report.applied.push(m.name)
    }
    return report
  }

  if (handle.dialect === 'sqlite') return run(handle.db)

  // Waiting for the lock and rebuilding a large seed table may take minutes: no query timeout here.
  const timeout = handle.queryTimeoutMs()
  handle.setQueryTimeout(0)
  try {
    return await migrateLocked(handle, run)
  } finally {
    handle.setQueryTimeout(timeout)
  }
}

async function migrateLocked(handle: DatabaseHandle, run: (db: Kysely<any>) => Promise<MigrationReport>): Promise<MigrationReport> {
  return handle.db.connection().execute(async (conn) => {
    // The lock is scoped by the current database and prefix so two sites on one server do not wait
    // on each other. Hashed because MySQL 5.7+ refuses lock names over 64 characters, and a database
    // name alone may have 64: 'wp-ai-gateway:migrate:' + 40 hex = 62.
    const lockName = sql`CONCAT('wp-ai-gateway:migrate:', SHA1(CONCAT(DATABASE(), ':', ${handle.prefix})))`
    const got = await sql<{ ok: number | null }>`SELECT GET_LOCK(${lockName}, ${LOCK_WAIT_SECONDS}) AS ok`.execute(conn)
    if (Number(got.rows[0]?.ok) !== 1) throw new Error(`could not take the migration lock within ${LOCK_WAIT_SECONDS}s (another replica is migrating?)`)
    try {
      return await run(conn)
    } finally {
      await sql`SELECT RELEASE_LOCK(${lockName})`.execute(conn)
    }
  })
}
