/**
 * Results stored outside the table (SPEC §12): `result_ref` on `{prefix}ai_jobs` names the stored
 * object of a result over RESULT_INLINE_MAX_BYTES, whose `result_json` is then NULL.
 * Frozen in time: it never imports application code.
 */
import { sql, type Kysely } from 'kysely'
import type { MigrationContext } from './0001_ai_jobs.js'

type Db = Kysely<any>

export function migration(ctx: MigrationContext) {
  return {
    name: '0007_result_store',
    up: async (db: Db) => {
      const table = `${ctx.prefix}ai_jobs`
      if (ctx.dialect === 'sqlite') {
        const columns = await sql<{ name: string }>`SELECT name FROM pragma_table_info(${table})`.execute(db)
        if (!columns.rows.some((r) => r.name === 'result_ref')) await sql`ALTER TABLE ${sql.id(table)} ADD COLUMN result_ref TEXT NULL`.execute(db)
        return
      }
      const found = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.COLUMNS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${table} AND COLUMN_NAME = 'result_ref'`.execute(db)
      // ASCII keys (src/results/result-store.ts): a binary-safe, case-sensitive column.
      if (Number(found.rows[0]?.n ?? 0) === 0) await sql`ALTER TABLE ${sql.id(table)} ADD COLUMN result_ref VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL`.execute(db)
    },
  }
}
