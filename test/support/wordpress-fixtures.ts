/**
 * Loads the WordPress fixtures (test/fixtures/wordpress) into MariaDB or SQLite, so the same
 * authentication tests run against both.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { sql } from 'kysely'
import { createConnection, type Connection } from 'mysql2/promise'
import type { DatabaseHandle } from '../../src/db/database.js'

const FIXTURES = new URL('../fixtures/wordpress/', import.meta.url)
export const MYSQL_ROOT = { host: '127.0.0.1', port: 3306, user: 'root', password: '' }

export interface AuthVectorCase {
  name: string
  user: string
  cookie: string
  nonce: string | null
  now: number
  expect_user_id: number
}
export interface AuthVectors {
  siteurl: string
  cookiehash: string
  logged_in_cookie_name: string
  table_prefix: string
  salts: Record<string, string>
  nonce_life: number
  users: Record<string, { id: number; roles: string[]; caps: string[] }>
  cases: AuthVectorCase[]
  nonce_cases: { name: string; cookie: string; nonce: string; now: number; valid: boolean }[]
  application_passwords: { user: string; user_id: number; password: string; chunked: string; uuid: string }[]
  wp68: {
    cases: Array<{
      user: string
      name?: string
      user_id?: number
      roles?: string[]
      user_pass?: string
      cookie: string
      nonce?: string
      now: number
      expect_user_id: number
      application_password?: string
      application_password_hash?: string
    }>
  }
}

export const authVectors = JSON.parse(readFileSync(new URL('auth-vectors.json', FIXTURES), 'utf8')) as AuthVectors

type Row = Record<string, string | number | null>
interface FixtureRows {
  wp_users: Row[]
  wp_usermeta: Row[]
  wp_options: Row[]
}

function readRows(): FixtureRows {
  return JSON.parse(readFileSync(new URL('wordpress-rows.json', FIXTURES), 'utf8')) as FixtureRows
}

// Just enough of PHP's serialize() to write the rows the wp68 vectors describe.
type Serializable = string | number | boolean | null | { [key: string]: Serializable } | Serializable[]
function phpSerialize(value: Serializable): string {
  if (value === null) return 'N;'
  if (typeof value === 'boolean') return `b:${value ? 1 : 0};`
  if (typeof value === 'number') return `i:${value};`
  if (typeof value === 'string') return `s:${Buffer.byteLength(value)}:"${value}";`
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value)
  const body = entries.map(([k, v]) => (typeof k === 'number' ? `i:${k};` : phpSerialize(k)) + phpSerialize(v)).join('')
  return `a:${entries.length}:{${body}}`
}

/**
 * Rows for the WordPress 6.8 users (carol, dave) built from auth-vectors.json, for a dump that
 * lacks them. The current fixtures already contain them; this keeps the tests honest if the
 * dump is regenerated without them.
 */
function wp68Rows(presentLogins: Set<string>): { users: Row[]; usermeta: Row[] } {
  const users: Row[] = []
  const usermeta: Row[] = []
  for (const c of authVectors.wp68.cases) {
    if (!c.user_id || !c.user_pass || presentLogins.has(c.user)) continue
    presentLogins.add(c.user)
    const [, expiration, token] = c.cookie.split('|') as [string, string, string, string]
    users.push({ ID: c.user_id, user_login: c.user, user_pass: c.user_pass, user_email: `${c.user}@example.com` })
    const meta = (meta_key: string, meta_value: string) => usermeta.push({ user_id: c.user_id!, meta_key, meta_value })
    meta(`${authVectors.table_prefix}capabilities`, phpSerialize(Object.fromEntries((c.roles ?? []).map((r) => [r, true]))))
    const verifier = createHash('sha256').update(token).digest('hex')
    meta('session_tokens', phpSerialize({ [verifier]: { expiration: Number(expiration), login: c.now } }))
    meta('_application_passwords', phpSerialize([{ uuid: `wp68-${c.user}`, app_id: '', name: 'gateway-test', password: c.application_password_hash!, created: c.now, last_used: null, last_ip: null }]))
  }
  return { users, usermeta }
}

function assertTestDatabaseName(name: string): void {
  if (!/^gw_test_auth_[a-z0-9_]+$/.test(name)) throw new Error(`refusing to touch database "${name}": use gw_test_auth_<name>`)
}

async function insertMysql(conn: Connection, table: string, row: Row): Promise<void> {
  const columns = Object.keys(row)
  await conn.query(`INSERT INTO \`${table}\` (${columns.map((c) => `\`${c}\``).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`, Object.values(row))
}

/**
 * Creates the database if needed, (re)loads wordpress-users.sql into it, adds the wp68 users if
 * the dump lacks them, and returns its `mysql://` URL. Throws when MariaDB cannot be reached, so
 * the tests fail rather than skip.
 */
export async function loadWordPressFixturesMysql(databaseName: string): Promise<string> {
  assertTestDatabaseName(databaseName)
  const conn = await createConnection({ ...MYSQL_ROOT, multipleStatements: true })
  try {
    await conn.query(`CREATE DATABASE IF NOT EXISTS \`${databaseName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci`)
    await conn.query(`USE \`${databaseName}\``)
    await conn.query('DROP TABLE IF EXISTS wp_users, wp_usermeta, wp_options, wp_sitemeta')
    await conn.query(readFileSync(new URL('wordpress-users.sql', FIXTURES), 'utf8'))
    const [present] = await conn.query('SELECT user_login FROM wp_users') as unknown as [{ user_login: string }[]]
    const missing = wp68Rows(new Set(present.map((r) => r.user_login)))
    for (const row of missing.users) await insertMysql(conn, 'wp_users', row)
    for (const row of missing.usermeta) await insertMysql(conn, 'wp_usermeta', row)
  } finally {
    await conn.end()
  }
  return `mysql://root@127.0.0.1:3306/${databaseName}`
}

export async function dropWordPressFixturesMysql(databaseName: string): Promise<void> {
  assertTestDatabaseName(databaseName)
  const conn = await createConnection(MYSQL_ROOT)
  try {
    await conn.query(`DROP DATABASE IF EXISTS \`${databaseName}\``)
  } finally {
    await conn.end()
  }
}

/**
 * Creates `{prefix}users`, `{prefix}usermeta` and `{prefix}options` in a SQLite handle (the
 * prefix plugin names them) and inserts wordpress-rows.json, plus the wp68 users if missing.
 * Logins and e-mails compare without case, as in WordPress's MySQL tables.
 */
export async function loadWordPressFixturesSqlite(handle: DatabaseHandle): Promise<void> {
  const { db } = handle
  await db.schema.createTable('users')
    .addColumn('ID', 'integer', (c) => c.primaryKey())
    // WordPress's utf8mb4_unicode_520_ci compares logins and e-mails case-insensitively
    // (get_user_by('login', 'BOB') is bob); NOCASE is SQLite's nearest (ASCII) equivalent.
    .addColumn('user_login', 'text', (c) => c.notNull().defaultTo('').modifyEnd(sql`collate nocase`))
    .addColumn('user_pass', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('user_email', 'text', (c) => c.notNull().defaultTo('').modifyEnd(sql`collate nocase`))
    .addColumn('user_registered', 'text', (c) => c.notNull().defaultTo('0000-00-00 00:00:00'))
    .addColumn('display_name', 'text', (c) => c.notNull().defaultTo(''))
    .execute()
  await db.schema.createTable('usermeta')
    .addColumn('umeta_id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('user_id', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('meta_key', 'text')
    .addColumn('meta_value', 'text')
    .execute()
  await db.schema.createTable('options')
    .addColumn('option_id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('option_name', 'text', (c) => c.notNull().unique())
    .addColumn('option_value', 'text', (c) => c.notNull())
    .addColumn('autoload', 'text', (c) => c.notNull().defaultTo('yes'))
    .execute()

  const rows = readRows()
  const numeric = (row: Row, keys: string[]): Row => ({ ...row, ...Object.fromEntries(keys.filter((k) => k in row).map((k) => [k, Number(row[k])])) })
  const users = rows.wp_users.map((r) => numeric(r, ['ID']))
  const usermeta = rows.wp_usermeta.map((r) => numeric(r, ['umeta_id', 'user_id']))
  const missing = wp68Rows(new Set(users.map((u) => String(u.user_login))))
  // Inserted through Kysely's untyped path: the fixture rows carry columns schema.ts leaves out.
  const raw = db as unknown as { insertInto(t: string): { values(v: Row[]): { execute(): Promise<unknown> } } }
  await raw.insertInto('users').values([...users, ...missing.users]).execute()
  await raw.insertInto('usermeta').values([...usermeta, ...missing.usermeta]).execute()
  await raw.insertInto('options').values(rows.wp_options).execute()
}
