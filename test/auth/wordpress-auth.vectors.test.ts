/**
 * Every case recorded from a real WordPress (test/fixtures/wordpress/auth-vectors.json)
 * must get WordPress's answer, against the fixture tables in MariaDB and in SQLite.
 */
import { RUN } from '../support/run-tag.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createWordPressAuth, type WordPressAuth } from '../../src/auth/wordpress-auth.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { MemoryStore } from '../../src/store/memory-store.js'
import {
  authVectors as v, dropWordPressFixturesMysql, loadWordPressFixturesMysql, loadWordPressFixturesSqlite,
} from '../support/wordpress-fixtures.js'

const MYSQL_DB = 'gw_test_auth_vectors_' + RUN

const dialects = [
  {
    name: 'sqlite',
    open: async () => {
      const handle = await openDatabase({ url: 'sqlite::memory:', prefix: 'wp_' })
      await loadWordPressFixturesSqlite(handle)
      return handle
    },
    cleanup: async () => {},
  },
  {
    name: 'mariadb',
    open: async () => openDatabase({ url: await loadWordPressFixturesMysql(MYSQL_DB), prefix: 'wp_' }),
    cleanup: () => dropWordPressFixturesMysql(MYSQL_DB),
  },
]

const cookieHeader = (cookie: string) => `wordpress_test_cookie=WP%20Cookie%20check; ${v.logged_in_cookie_name}=${encodeURIComponent(cookie)}`
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

describe.each(dialects)('WordPress auth vectors on $name', (dialect) => {
  let handle: DatabaseHandle
  let auth: WordPressAuth
  const clock = manualClock(v.cases[0]!.now * 1000)
  const store = new MemoryStore(() => clock.now())

  beforeAll(async () => {
    handle = await dialect.open()
    auth = createWordPressAuth({
      db: handle, settings: v.salts, store, clock, nonceLifeSeconds: v.nonce_life,
      createCapability: 'read', adminCapability: 'manage_options',
    })
  })
  afterAll(async () => {
    await store.close()
    await handle?.close()
    await dialect.cleanup()
  })

  const at = (now: number) => clock.set(now * 1000)

  it('names the cookie wordpress_logged_in_ + md5(siteurl)', async () => {
    expect(await auth.loggedInCookieName()).toBe(v.logged_in_cookie_name)
  })

  describe('cookie cases', () => {
    it.each(v.cases)('$name → user $expect_user_id', async (c) => {
      at(c.now)
      const result = await auth.authenticateCookie({ method: 'GET', cookieHeader: cookieHeader(c.cookie), nonce: c.nonce })
      if (c.expect_user_id === 0) {
        expect(result.kind).toBe('none')
        return
      }
      expect(result).toMatchObject({ kind: 'user', userId: c.expect_user_id, method: 'cookie', login: c.user })
      if (result.kind !== 'user') return
      const expected = v.users[c.user]!
      expect(result.roles).toEqual(expected.roles)
      expect([...result.capabilities].filter((cap) => cap !== 'exist').sort()).toEqual([...expected.caps].sort())
      expect(result.canCreate).toBe(true)
      expect(result.isAdmin).toBe(expected.caps.includes('manage_options'))
    })

    it.each(v.cases.filter((c) => c.expect_user_id > 0))('$name without a nonce is anonymous', async (c) => {
      at(c.now)
      expect(await auth.authenticateCookie({ method: 'GET', cookieHeader: cookieHeader(c.cookie), nonce: undefined }))
        .toEqual({ kind: 'anonymous' })
    })
  })

  describe('nonce cases', () => {
    it.each(v.nonce_cases)('$name', async (c) => {
      at(c.now)
      const result = await auth.authenticateCookie({ method: 'GET', cookieHeader: cookieHeader(c.cookie), nonce: c.nonce })
      if (c.valid) expect(result).toMatchObject({ kind: 'user', userId: v.users.alice!.id })
      else expect(result).toEqual({ kind: 'invalid_nonce' })
    })

    it('refuses an empty nonce as WordPress does (present but empty)', async () => {
      const c = v.cases[1]!
      at(c.now)
      expect(await auth.authenticateCookie({ method: 'GET', cookieHeader: cookieHeader(c.cookie), nonce: '' }))
        .toEqual({ kind: 'invalid_nonce' })
    })
  })

  describe('application passwords', () => {
    const forms = v.application_passwords.flatMap((p) => [
      { ...p, form: 'plain', secret: p.password },
      { ...p, form: 'chunked', secret: p.chunked },
    ])

    it.each(forms)('$user ($form) → user $user_id', async (p) => {
      const result = await auth.authenticateBasic({ authorizationHeader: basic(p.user, p.secret), clientIp: '192.0.2.1' })
      expect(result).toMatchObject({ kind: 'user', userId: p.user_id, method: 'application_password', login: p.user })
      if (result.kind === 'user') expect(result.roles).toEqual(v.users[p.user]!.roles)
    })

    it('accepts the e-mail address in place of the login, as WordPress does', async () => {
      const p = v.application_passwords[0]!
      expect(await auth.authenticateBasic({ authorizationHeader: basic(`${p.user}@example.com`, p.password), clientIp: '192.0.2.2' }))
        .toMatchObject({ kind: 'user', userId: p.user_id })
    })

    it('refuses a wrong password, another user\'s password and an unknown user', async () => {
      const [alice, bob] = v.application_passwords as [typeof v.application_passwords[0], typeof v.application_passwords[0]]
      const tries = [basic(alice.user, `${alice.password.slice(0, -1)}x`), basic(alice.user, bob.password), basic('nobody', alice.password)]
      for (const header of tries) {
        expect(await auth.authenticateBasic({ authorizationHeader: header, clientIp: '192.0.2.3' })).toMatchObject({ kind: 'invalid' })
      }
    })
  })

  describe('WordPress 6.8 formats', () => {
    it.each(v.wp68.cases)('cookie of $user → user $expect_user_id', async (c) => {
      at(c.now)
      const result = await auth.authenticateCookie({ method: 'GET', cookieHeader: cookieHeader(c.cookie), nonce: c.nonce ?? null })
      if (c.expect_user_id === 0) expect(result).toEqual({ kind: 'none', reason: 'bad_hmac' })
      else expect(result).toMatchObject({ kind: 'user', userId: c.expect_user_id, roles: c.roles })
    })

    it.each(v.wp68.cases.filter((c) => c.application_password))('$user\'s BLAKE2b (6.8) application password → user $user_id', async (c) => {
      const result = await auth.authenticateBasic({ authorizationHeader: basic(c.user, c.application_password!), clientIp: '192.0.2.4' })
      expect(result).toMatchObject({ kind: 'user', userId: c.user_id })
      expect(await auth.authenticateBasic({ authorizationHeader: basic(c.user, `${c.application_password!}0`), clientIp: '192.0.2.4' }))
        .toMatchObject({ kind: 'invalid', reason: 'incorrect_password' })
    })
  })
})
