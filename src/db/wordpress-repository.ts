/**
 * Every read of WordPress's own tables. The gateway never writes them. Queries go through
 * Kysely only, so they run unchanged on MySQL/MariaDB and on SQLite; the TablePrefixPlugin turns
 * `users` into `wp_users`. Meta keys that carry the prefix (`wp_capabilities`) are built by the
 * caller, since they are data rather than table names.
 *
 * Lookups by login and e-mail follow the column's collation: on MySQL that is WordPress's own
 * case-insensitive `utf8mb4_unicode_520_ci`, exactly what `get_user_by()` sees; SQLite (a dev
 * database, never a real WordPress one) compares exactly unless its table says `COLLATE NOCASE`.
 */
import { sql, type Kysely } from 'kysely'
import type { DatabaseHandle } from './database.js'
import type { Database } from './schema.js'

export interface WordPressUserRow {
  ID: number
  user_login: string
  user_pass: string
  user_email: string
}

// WordPress's main network; get_site_option() on a standard multisite reads site_id 1.
const MAIN_NETWORK_ID = 1

function toUserRow(row: WordPressUserRow | undefined): WordPressUserRow | undefined {
  // mysql2 may hand BIGINT UNSIGNED back as a string when it does not fit a double.
  return row && { ...row, ID: Number(row.ID) }
}

function userColumns(db: Kysely<Database>) {
  return db.selectFrom('users').select(['ID', 'user_login', 'user_pass', 'user_email'])
}

export async function getUserByLogin(db: Kysely<Database>, login: string): Promise<WordPressUserRow | undefined> {
  return toUserRow(await userColumns(db).where('user_login', '=', login).orderBy('ID').limit(1).executeTakeFirst())
}

export async function getUserByEmail(db: Kysely<Database>, email: string): Promise<WordPressUserRow | undefined> {
  return toUserRow(await userColumns(db).where('user_email', '=', email).orderBy('ID').limit(1).executeTakeFirst())
}

export async function getUserById(db: Kysely<Database>, userId: number): Promise<WordPressUserRow | undefined> {
  return toUserRow(await userColumns(db).where('ID', '=', userId).limit(1).executeTakeFirst())
}

/**
 * The raw `meta_value` that `get_user_meta($id, $key, true)` would unserialize: the first row
 * by `umeta_id`, as WordPress's meta cache orders them. `undefined` when there is no row.
 */
export async function getUserMeta(db: Kysely<Database>, userId: number, metaKey: string): Promise<string | null | undefined> {
  const row = await db.selectFrom('usermeta').select('meta_value')
    .where('user_id', '=', userId).where('meta_key', '=', metaKey)
    .orderBy('umeta_id').limit(1).executeTakeFirst()
  return row?.meta_value
}

/** The raw `option_value` of `{prefix}options`, or `undefined` when the option does not exist. */
export async function getOption(db: Kysely<Database>, name: string): Promise<string | undefined> {
  const row = await db.selectFrom('options').select('option_value').where('option_name', '=', name).limit(1).executeTakeFirst()
  return row?.option_value
}

function isMissingTable(err: unknown): boolean {
  const e = err as { code?: string; errno?: number; message?: string } | null
  if (!e || typeof e !== 'object') return false
  return e.code === 'ER_NO_SUCH_TABLE' || e.errno === 1146 || /no such table/i.test(e.message ?? '')
}

/**
 * A network option from `{prefix}sitemeta` (what get_site_option() reads on a multisite).
 * Answers `{ table: false }` when there is no sitemeta table, i.e. on a single site.
 */
export async function getSiteMeta(db: Kysely<Database>, key: string): Promise<{ table: false } | { table: true; value: string | null | undefined }> {
  try {
    const row = await db.selectFrom('sitemeta').select('meta_value')
      .where('site_id', '=', MAIN_NETWORK_ID).where('meta_key', '=', key)
      .orderBy('meta_id').limit(1).executeTakeFirst()
    return { table: true, value: row?.meta_value }
  } catch (err) {
    if (isMissingTable(err)) return { table: false }
    throw err
  }
}

/**
 * The raw serialized `site_admins` network option (the super admins' logins). `undefined` when
 * the site has no sitemeta table (not a multisite); `null` when the table has no such row.
 */
export async function getSiteAdmins(db: Kysely<Database>): Promise<string | null | undefined> {
  const meta = await getSiteMeta(db, 'site_admins')
  if (!meta.table) return undefined
  return meta.value ?? null
}

/** True when the database holds WordPress's user tables (the shared WordPress database). */
export async function hasWordPressTables(handle: DatabaseHandle): Promise<boolean> {
  const name = `${handle.prefix}users`
  if (handle.dialect === 'mysql') {
    const r = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ${name}`.execute(handle.db)
    return Number(r.rows[0]?.n ?? 0) > 0
  }
  const r = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ${name}`.execute(handle.db)
  return Number(r.rows[0]?.n ?? 0) > 0
}
