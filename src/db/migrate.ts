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
      await sql`CREATE TABLE IF NOT EXISTS ${book} (name VARCHAR(191) NOT NULL PRIMARY KEY, applied_at DATETIME(3) NOT NULL)
        ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`.execute(db)
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

  return handle.db.connection().execute(async (conn) => {
    const lockName = `wp-ai-gateway:migrate:${handle.prefix}`
    // The lock name is scoped by the current database so two sites on one server do not wait on each other.
    const got = await sql<{ ok: number | null }>`SELECT GET_LOCK(CONCAT(DATABASE(), ':', ${lockName}), ${LOCK_WAIT_SECONDS}) AS ok`.execute(conn)
    if (Number(got.rows[0]?.ok) !== 1) throw new Error(`could not take the migration lock within ${LOCK_WAIT_SECONDS}s (another replica is migrating?)`)
    try {
      return await run(conn)
    } finally {
      await sql`SELECT RELEASE_LOCK(CONCAT(DATABASE(), ':', ${lockName}))`.execute(conn)
    }
  })
}
