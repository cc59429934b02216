/**
 * `created (created_at, id)` on `{prefix}ai_jobs`: the admin list without filters (newest first,
 * keyset pages) and date-range reads walk it instead of sorting the whole table.
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

export function migration(ctx: MigrationContext) {
  return {
    name: '0004_created_index',
    up: async (db: Db) => {
      const table = `${ctx.prefix}ai_jobs`
      if (ctx.dialect === 'sqlite') {
        await sql`CREATE INDEX IF NOT EXISTS ${sql.id(`${table}_created`)} ON ${sql.id(table)} (created_at, id)`.execute(db)
        return
      }
      const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table} AND INDEX_NAME = 'created'`.execute(db)
      if (Number(found.rows[0]?.n ?? 0) === 0) await sql`ALTER TABLE ${sql.id(table)} ADD KEY created (created_at, id)`.execute(db)
    },
  }
}
