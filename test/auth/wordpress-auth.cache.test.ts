/**
 * The short caches and the failure throttle: a logout, a role change or a revoked application
 * password takes effect once the cache TTL has passed, and ten wrong application passwords in a
 * row are throttled. The clock is injected, so nothing sleeps.
 */
import { RUN } from '../support/run-tag.js'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createWordPressAuth, type WordPressAuth } from '../../src/auth/wordpress-auth.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import {
  authVectors as v, dropWordPressFixturesMysql, loadWordPressFixturesMysql, loadWordPressFixturesSqlite,
} from '../support/wordpress-fixtures.js'

const MYSQL_DB = 'gw_test_auth_cache_' + RUN
const TTL_MS = 5_000

const dialects = [
  {
    name: 'sqlite',
    open: async () => {
      const handle = await openDatabase({ url: 'sqlite::memory:', prefix: 'wp_' })
      await loadWordPressFixturesSqlite(handle)
      return handle
    },
    reload: async (handle: DatabaseHandle) => {
      for (const table of ['usermeta', 'users', 'options'] as const) await handle.db.schema.dropTable(table).execute()
      await loadWordPressFixturesSqlite(handle)
    },
    cleanup: async () => {},
  },
  {
    name: 'mariadb',
    open: async () => openDatabase({ url: await loadWordPressFixturesMysql(MYSQL_DB), prefix: 'wp_' }),
    reload: async () => {
      await loadWordPressFixturesMysql(MYSQL_DB)
    },
    cleanup: () => dropWordPressFixturesMysql(MYSQL_DB),
  },
]

const aliceCase = v.cases.find((c) => c.user === 'alice' && c.expect_user_id > 0)!
const [aliceApp, bobApp] = v.application_passwords as [typeof v.application_passwords[0], typeof v.application_passwords[0]]
const cookieHeader = `${v.logged_in_cookie_name}=${encodeURIComponent(aliceCase.cookie)}`
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

describe.each(dialects)('WordPress auth caches and throttle on $name', (dialect) => {
  let handle: DatabaseHandle
  let auth: WordPressAuth
  let store: MemoryStore
  const clock = manualClock(aliceCase.now * 1000)

  beforeAll(async () => {
    handle = await dialect.open()
  })
  beforeEach(async () => {
    await dialect.reload(handle)
    clock.set(aliceCase.now * 1000)
    await store?.close()
    store = new MemoryStore(() => clock.now())
    auth = createWordPressAuth({
      db: handle, settings: v.salts, store, clock, cacheTtlMs: TTL_MS,
      createCapability: 'read', adminCapability: 'manage_options',
    })
  })
  afterAll(async () => {
    await store?.close()
    await handle?.close()
    await dialect.cleanup()
  })

  const cookieAuth = () => auth.authenticateCookie({ method: 'POST', cookieHeader, nonce: aliceCase.nonce })

  it('refuses a destroyed session once the cache TTL has passed', async () => {
    expect(await cookieAuth()).toMatchObject({ kind: 'user', userId: 2 })
    // WP_Session_Tokens::destroy_all() on logout deletes the meta row.
    await handle.db.deleteFrom('usermeta').where('user_id', '=', 2).where('meta_key', '=', 'session_tokens').execute()
    clock.advance(TTL_MS - 1)
    expect(await cookieAuth()).toMatchObject({ kind: 'user', userId: 2 })
    clock.advance(2)
    expect(await cookieAuth()).toEqual({ kind: 'none', reason: 'no_session' })
  })

  it('refuses a session whose entry was removed from session_tokens (the row updated)', async () => {
    expect(await cookieAuth()).toMatchObject({ kind: 'user' })
    await handle.db.updateTable('usermeta').set({ meta_value: 'a:0:{}' })
      .where('user_id', '=', 2).where('meta_key', '=', 'session_tokens').execute()
    clock.advance(TTL_MS + 1)
    expect(await cookieAuth()).toEqual({ kind: 'none', reason: 'no_session' })
  })

  it('sees a role change once the cache TTL has passed', async () => {
    const before = await cookieAuth()
    expect(before).toMatchObject({ kind: 'user', roles: ['subscriber'], isAdmin: false })
    await handle.db.updateTable('usermeta').set({ meta_value: 'a:1:{s:13:"administrator";b:1;}' })
      .where('user_id', '=', 2).where('meta_key', '=', 'wp_capabilities').execute()
    clock.advance(TTL_MS + 1)
    expect(await cookieAuth()).toMatchObject({ kind: 'user', roles: ['administrator'], isAdmin: true })
  })

  it('accepts a cookie at once when WordPress has just stored the salt options the cache lacked', async () => {
    // A wp-config without LOGGED_IN_* and NONCE_* constants: WordPress generates the salts on
    // first use and keeps them as options.
    const withoutConstants = createWordPressAuth({
      db: handle, settings: {}, store, clock, cacheTtlMs: TTL_MS, createCapability: 'read', adminCapability: 'manage_options',
    })
    const attempt = () => withoutConstants.authenticateCookie({ method: 'POST', cookieHeader, nonce: aliceCase.nonce })
    expect(await attempt()).toEqual({ kind: 'none', reason: 'no_salt' })
    await handle.db.insertInto('options').values([
      { option_id: 9001, option_name: 'logged_in_key', option_value: v.salts.LOGGED_IN_KEY! },
      { option_id: 9002, option_name: 'logged_in_salt', option_value: v.salts.LOGGED_IN_SALT! },
      { option_id: 9003, option_name: 'nonce_key', option_value: v.salts.NONCE_KEY! },
      { option_id: 9004, option_name: 'nonce_salt', option_value: v.salts.NONCE_SALT! },
    ]).execute()
    expect(await attempt()).toMatchObject({ kind: 'user', userId: 2 })
  })

  it('throttles ten wrong application passwords in a row, per address and per login', async () => {
    const wrong = basic(aliceApp.user, 'wrongwrongwrongwrongwron')
    const results = []
    for (let i = 0; i < 10; i++) results.push(await auth.authenticateBasic({ authorizationHeader: wrong, clientIp: '198.51.100.7' }))
    expect(results.slice(0, 9).every((r) => r.kind === 'invalid')).toBe(true)
    expect(results[9]).toMatchObject({ kind: 'throttled' })
    const retry = (results[9] as { retryAfterSeconds: number }).retryAfterSeconds
    expect(retry).toBeGreaterThan(0)
    expect(retry).toBeLessThanOrEqual(300)

    // Now even the right password is refused, from that address and, for alice, from any other.
    const right = basic(aliceApp.user, aliceApp.password)
    expect(await auth.authenticateBasic({ authorizationHeader: right, clientIp: '198.51.100.7' })).toMatchObject({ kind: 'throttled' })
    expect(await auth.authenticateBasic({ authorizationHeader: right, clientIp: '203.0.113.9' })).toMatchObject({ kind: 'throttled' })
    // bob from the throttled address is refused; bob from elsewhere is not.
    const bob = basic(bobApp.user, bobApp.password)
    expect(await auth.authenticateBasic({ authorizationHeader: bob, clientIp: '198.51.100.7' })).toMatchObject({ kind: 'throttled' })
    expect(await auth.authenticateBasic({ authorizationHeader: bob, clientIp: '203.0.113.9' })).toMatchObject({ kind: 'user', userId: 3 })

    clock.advance(300_001)
    expect(await auth.authenticateBasic({ authorizationHeader: right, clientIp: '198.51.100.7' })).toMatchObject({ kind: 'user', userId: 2 })
  })

  it('counts unknown users as failures too', async () => {
    let last
    for (let i = 0; i < 10; i++) last = await auth.authenticateBasic({ authorizationHeader: basic(`ghost${i}`, 'x1'), clientIp: '198.51.100.8' })
    expect(last).toMatchObject({ kind: 'throttled' })
  })

  it('trusts a verified application password only for the cache TTL', async () => {
    const right = basic(aliceApp.user, aliceApp.chunked)
    expect(await auth.authenticateBasic({ authorizationHeader: right, clientIp: '198.51.100.9' })).toMatchObject({ kind: 'user', userId: 2 })
    // Revoking it in WordPress deletes the entry from the meta.
    await handle.db.deleteFrom('usermeta').where('user_id', '=', 2).where('meta_key', '=', '_application_passwords').execute()
    expect(await auth.authenticateBasic({ authorizationHeader: right, clientIp: '198.51.100.9' })).toMatchObject({ kind: 'user', userId: 2 })
    clock.advance(TTL_MS + 1)
    expect(await auth.authenticateBasic({ authorizationHeader: right, clientIp: '198.51.100.9' }))
      .toEqual({ kind: 'invalid', reason: 'incorrect_password' })
  })

  it('reads super admins and network options from sitemeta on a multisite', async () => {
    await handle.db.schema.createTable('sitemeta')
      .addColumn('meta_id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('site_id', 'integer', (c) => c.notNull())
      .addColumn('meta_key', 'varchar(255)')
      .addColumn('meta_value', 'text')
      .execute()
    try {
      await handle.db.insertInto('sitemeta').values([
        { meta_id: 1, site_id: 1, meta_key: 'site_admins', meta_value: 'a:1:{i:0;s:5:"alice";}' },
        // get_site_option('siteurl') feeds COOKIEHASH on a multisite.
        { meta_id: 2, site_id: 1, meta_key: 'siteurl', meta_value: v.siteurl },
      ]).execute()
      auth.clearCaches()
      expect(await auth.loggedInCookieName()).toBe(v.logged_in_cookie_name)
      const alice = await cookieAuth()
      expect(alice).toMatchObject({ kind: 'user', userId: 2, roles: ['subscriber'], isAdmin: true })
      if (alice.kind === 'user') {
        expect(alice.can('manage_network')).toBe(true)
        expect(alice.can('do_not_allow')).toBe(false)
      }
    } finally {
      await handle.db.schema.dropTable('sitemeta').execute()
    }
  })

  it('drops its caches on reloadSettings, and new salts refuse old cookies', async () => {
    expect(await cookieAuth()).toMatchObject({ kind: 'user' })
    auth.reloadSettings({ ...v.salts, LOGGED_IN_KEY: 'rotated-logged-in-key' })
    expect(await cookieAuth()).toEqual({ kind: 'none', reason: 'bad_hmac' })
  })
})
