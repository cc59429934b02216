/**
 * WordPress's own writes, for tests that need rows the fixtures lack: a new login session as
 * wp_set_auth_cookie() → WP_Session_Tokens::create() stores it (the `session_tokens` user meta,
 * one entry per session keyed by the token's SHA-256), the cookie and REST nonce it hands the
 * browser, and the other meta rows WordPress updates in place (capabilities, application
 * passwords). Rows are written through the app's own Kysely handle, so the same helpers serve
 * MariaDB and SQLite.
 */
import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Database } from '../../src/db/schema.js'
import { generateLoggedInCookie, sessionVerifier } from '../../src/wordpress/cookie.js'
import { createNonce } from '../../src/wordpress/nonce.js'
import { isPhpArray, maybeUnserialize, type PhpValue } from '../../src/wordpress/php-unserialize.js'
import { authVectors } from './wordpress-fixtures.js'

/** What serializePhp() writes: PHP values as read back (Maps), or plain JavaScript arrays and objects. */
export type Serializable = PhpValue | Serializable[] | { [key: string]: Serializable }

/** PHP's serialize() for the values WordPress keeps in meta (arrays become Maps when read). */
export function serializePhp(value: Serializable): string {
  if (value === null) return 'N;'
  if (typeof value === 'boolean') return `b:${value ? 1 : 0};`
  if (typeof value === 'bigint') return `i:${value};`
  if (typeof value === 'number') return Number.isInteger(value) ? `i:${value};` : `d:${value};`
  if (typeof value === 'string') return `s:${Buffer.byteLength(value)}:"${value}";`
  const entries: [string | number, Serializable][] = value instanceof Map ? [...value.entries()]
    : Array.isArray(value) ? value.map((item, i) => [i, item]) : Object.entries(value)
  const body = entries.map(([k, v]) => (typeof k === 'number' ? `i:${k};` : serializePhp(k)) + serializePhp(v)).join('')
  return `a:${entries.length}:{${body}}`
}

/**
 * update_user_meta(): the existing row(s) of that key are updated, or one is added. Raw values,
 * as WordPress stores them (already serialized).
 */
export async function updateUserMeta(db: Kysely<Database>, userId: number, key: string, value: string): Promise<void> {
  const updated = await db.updateTable('usermeta').set({ meta_value: value })
    .where('user_id', '=', userId).where('meta_key', '=', key).executeTakeFirst()
  if (Number(updated.numUpdatedRows) > 0) return
  // umeta_id is the table's auto-increment; Kysely's row type names it as read, so insert untyped.
  const raw = db as unknown as { insertInto(t: string): { values(v: Record<string, unknown>): { execute(): Promise<unknown> } } }
  await raw.insertInto('usermeta').values({ user_id: userId, meta_key: key, meta_value: value }).execute()
}

/** WP_User::set_role(): `{prefix}capabilities` becomes exactly these roles. */
export async function setRoles(db: Kysely<Database>, userId: number, roles: string[], prefix = authVectors.table_prefix): Promise<void> {
  await updateUserMeta(db, userId, `${prefix}capabilities`, serializePhp(Object.fromEntries(roles.map((r) => [r, true]))))
}

export interface WordPressLogin {
  /** The decoded `wordpress_logged_in_…` cookie value. */
  cookie: string
  /** The `Cookie` header that carries it. */
  cookieHeader: string
  /** The session token inside the cookie. */
  token: string
  /** wp_create_nonce('wp_rest') for this session at `nowSeconds`. */
  nonce: string
}

const loggedInSalt = () => authVectors.salts.LOGGED_IN_KEY! + authVectors.salts.LOGGED_IN_SALT!
const nonceSalt = () => authVectors.salts.NONCE_KEY! + authVectors.salts.NONCE_SALT!

/**
 * A login as WordPress makes it: WP_Session_Tokens::create() reads the user's `session_tokens`,
 * adds `sha256(token) => { expiration, login }` and writes the meta back (other sessions stay),
 * then wp_set_auth_cookie() hands out `login|expiration|token|hmac`. Uses the fixture salts.
 */
export async function logIn(db: Kysely<Database>, userId: number, options: { nowSeconds: number; expiration?: number }): Promise<WordPressLogin> {
  const user = await db.selectFrom('users').select(['user_login', 'user_pass']).where('ID', '=', userId).executeTakeFirstOrThrow()
  const expiration = options.expiration ?? options.nowSeconds + 14 * 86_400
  // wp_generate_password( 43, false, false ): letters and digits.
  const token = randomBytes(48).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 43)
  const current = await db.selectFrom('usermeta').select('meta_value')
    .where('user_id', '=', userId).where('meta_key', '=', 'session_tokens').orderBy('umeta_id').executeTakeFirst()
  const parsed = current?.meta_value ? maybeUnserialize(current.meta_value) : undefined
  const sessions: Map<string | number, PhpValue> = isPhpArray(parsed) ? parsed : new Map()
  sessions.set(sessionVerifier(token), new Map<string, PhpValue>([['expiration', expiration], ['login', options.nowSeconds]]))
  await updateUserMeta(db, userId, 'session_tokens', serializePhp(sessions))
  const cookie = generateLoggedInCookie({ login: user.user_login, passwordHash: user.user_pass }, expiration, token, loggedInSalt())
  return {
    cookie,
    cookieHeader: `${authVectors.logged_in_cookie_name}=${encodeURIComponent(cookie)}`,
    token,
    nonce: createNonce({ action: 'wp_rest', userId, token, nowSeconds: options.nowSeconds, salt: nonceSalt(), nonceLifeSeconds: authVectors.nonce_life }),
  }
}

/** WP_Session_Tokens::destroy(): that session's entry removed, the meta deleted with the last one. */
export async function logOut(db: Kysely<Database>, userId: number, token: string): Promise<void> {
  const current = await db.selectFrom('usermeta').select('meta_value')
    .where('user_id', '=', userId).where('meta_key', '=', 'session_tokens').orderBy('umeta_id').executeTakeFirst()
  const parsed = current?.meta_value ? maybeUnserialize(current.meta_value) : undefined
  if (!isPhpArray(parsed)) return
  parsed.delete(sessionVerifier(token))
  if (parsed.size === 0) {
    await db.deleteFrom('usermeta').where('user_id', '=', userId).where('meta_key', '=', 'session_tokens').execute()
  } else {
    await updateUserMeta(db, userId, 'session_tokens', serializePhp(parsed))
  }
}
