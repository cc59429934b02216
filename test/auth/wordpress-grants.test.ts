/**
 * Caches may delay a revocation, never a grant (SPEC §5), through the HTTP API on MariaDB and
 * SQLite: a login made while the user's rows are cached works at once (a second device, logging
 * out and in again, a new password, a new user), as do an application password of a new user
 * and a role just given; a revocation still takes effect once the cache has expired. Tokens of
 * WordPress users are held to AI_CREATE_CAPABILITY like their cookies, through the same cache.
 * The clock is injected (the cache and nonces depend on it), so nothing sleeps.
 */
import type { FastifyInstance } from 'fastify'
import { afterAll, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { wpFastHash } from '../../src/wordpress/application-passwords.js'
import { generateLoggedInCookie } from '../../src/wordpress/cookie.js'
import { bearer, DIALECTS } from '../helpers.js'
import { wordpressApps } from '../support/wordpress-app.js'
import { authVectors as v } from '../support/wordpress-fixtures.js'
import { logIn, logOut, serializePhp, setRoles, updateUserMeta } from '../support/wordpress-logins.js'

const BASE = '/wp-json/ai/v1'
const NOW_MS = v.cases[0]!.now * 1000
/** The row cache's lifetime (wordpress-auth.ts: 5 s), and just past it. */
const CACHE_TTL_MS = 5_000
const PAST_CACHE_MS = CACHE_TTL_MS + 1

const fixtureLogin = (user: string) => {
  const c = v.cases.find((k) => k.user === user && k.expect_user_id > 0 && k.nonce)!
  return { cookieHeader: `${v.logged_in_cookie_name}=${encodeURIComponent(c.cookie)}`, nonce: c.nonce!, token: c.cookie.split('|')[2]! }
}
const aliceApp = v.application_passwords.find((p) => p.user === 'alice')!
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })
const withCookie = (login: { cookieHeader: string; nonce: string }) => ({ cookie: login.cookieHeader, 'x-wp-nonce': login.nonce })

let inputCounter = 0
type Res = Awaited<ReturnType<FastifyInstance['inject']>>

function expectStatus(res: Res, status: number, code?: string): void {
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status })
  if (code) expect(res.json()).toMatchObject({ code })
}

describe.each(DIALECTS)('grants are not delayed by the caches, on %s', (dialect) => {
  const apps = wordpressApps(dialect, `grants_${dialect}`)
  const clock = manualClock(NOW_MS)
  let app: FastifyInstance

  afterAll(() => apps.cleanup())

  async function start(env: Record<string, string> = {}): Promise<FastifyInstance> {
    clock.set(NOW_MS)
    app = await apps.reset(env, clock)
    return app
  }
  const db = () => app.db.db
  const nowSeconds = () => Math.floor(clock.now() / 1000)
  const createJob = (headers: Record<string, string>, remoteAddress = '192.0.2.10') => app.inject({
    method: 'POST', url: `${BASE}/jobs`, remoteAddress,
    headers: { 'content-type': 'application/json', ...headers },
    payload: JSON.stringify({ input: `grant test ${++inputCounter}` }),
  })
  const adminJobs = (headers: Record<string, string>) => app.inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers })
  async function expectOwner(res: Res, userId: number): Promise<void> {
    expectStatus(res, 202)
    const row = await db().selectFrom('ai_jobs').select(['user_id', 'owner_key']).where('id', '=', res.json().job_id).executeTakeFirstOrThrow()
    expect({ user_id: Number(row.user_id), owner_key: row.owner_key }).toEqual({ user_id: userId, owner_key: `u:${userId}` })
  }

  describe('new logins', () => {
    it("accepts a second login of alice at once, while her first session's rows are cached", async () => {
      await start()
      const phone = fixtureLogin('alice')
      await expectOwner(await createJob(withCookie(phone)), 2)
      // The laptop logs in: WordPress adds a second entry to her session_tokens.
      const laptop = await logIn(db(), 2, { nowSeconds: nowSeconds() })
      await expectOwner(await createJob(withCookie(laptop)), 2)
      // Both sessions live on.
      await expectOwner(await createJob(withCookie(phone)), 2)
      await expectOwner(await createJob(withCookie(laptop)), 2)
    })

    it('accepts a login right after a logout (the session_tokens row deleted and written again)', async () => {
      await start()
      const before = fixtureLogin('bob')
      await expectOwner(await createJob(withCookie(before)), 3)
      await logOut(db(), 3, before.token)
      const again = await logIn(db(), 3, { nowSeconds: nowSeconds() })
      await expectOwner(await createJob(withCookie(again)), 3)
    })

    it('accepts the cookie of a login made after a password change at once (a new pass_frag)', async () => {
      await start()
      const old = fixtureLogin('alice')
      await expectOwner(await createJob(withCookie(old)), 2)
      // wp_set_password(): a new hash (so a new pass_frag in every cookie) and no session left.
      await db().updateTable('users').set({ user_pass: '$P$BxNewHashAbcdefghijklmnopqrstu.' }).where('ID', '=', 2).execute()
      await logOut(db(), 2, old.token)
      const fresh = await logIn(db(), 2, { nowSeconds: nowSeconds() })
      await expectOwner(await createJob(withCookie(fresh)), 2)
      // The cookie made with the old hash is refused once the cache has expired.
      clock.advance(PAST_CACHE_MS)
      expectStatus(await createJob(withCookie(old)), 401, 'ai_unauthorized')
    })

    it('accepts a user created after her login name was looked up and not found', async () => {
      await start()
      const expiration = nowSeconds() + 3600
      const salt = v.salts.LOGGED_IN_KEY! + v.salts.LOGGED_IN_SALT!
      const early = generateLoggedInCookie({ login: 'erin', passwordHash: '$P$BerinHashAbcdefghijklmnopqrstu' }, expiration, 'x'.repeat(43), salt)
      expectStatus(await createJob({ cookie: `${v.logged_in_cookie_name}=${encodeURIComponent(early)}`, 'x-wp-nonce': 'abcdef0123' }), 401, 'ai_unauthorized')
      // wp_insert_user(), then her first login.
      await db().insertInto('users').values({ ID: 10, user_login: 'erin', user_pass: '$P$BerinHashAbcdefghijklmnopqrstu', user_email: 'erin@example.com' }).execute()
      await setRoles(db(), 10, ['subscriber'])
      const erin = await logIn(db(), 10, { nowSeconds: nowSeconds() })
      await expectOwner(await createJob(withCookie(erin)), 10)
    })

    it('accepts the application password of a user created after a refused attempt with her name', async () => {
      await start()
      const password = 'Erin0application0password'
      expectStatus(await createJob(basic('erin', password), '192.0.2.20'), 401, 'ai_unauthorized')
      await db().insertInto('users').values({ ID: 10, user_login: 'erin', user_pass: '$P$BerinHashAbcdefghijklmnopqrstu', user_email: 'erin@example.com' }).execute()
      await setRoles(db(), 10, ['subscriber'])
      await updateUserMeta(db(), 10, '_application_passwords', serializePhp([{ uuid: 'erin-1', app_id: '', name: 'test', password: wpFastHash(password), created: nowSeconds(), last_used: null, last_ip: null }]))
      await expectOwner(await createJob(basic('erin', password), '192.0.2.20'), 10)
      await expectOwner(await createJob(basic('erin@example.com', password), '192.0.2.20'), 10)
    })

    it('spends at most one more round of reads on a refused cookie', async () => {
      await start()
      const tampered = v.cases.find((k) => k.name === 'tampered hmac')!
      const attempt = () => createJob({ cookie: `${v.logged_in_cookie_name}=${encodeURIComponent(tampered.cookie)}`, 'x-wp-nonce': 'abcdef0123' })
      expectStatus(await attempt(), 401, 'ai_unauthorized')
      const first = apps.wordpressReads()
      expect(first).toBeGreaterThan(0)
      for (let i = 0; i < 5; i++) expectStatus(await attempt(), 401, 'ai_unauthorized')
      // Each refusal on cached rows reads them once more past the cache, and no more.
      expect(apps.wordpressReads() - first).toBeLessThanOrEqual(5 * first)
    })

    it('takes a logout into account once the cache has expired', async () => {
      await start()
      const phone = fixtureLogin('alice')
      const laptop = await logIn(db(), 2, { nowSeconds: nowSeconds() })
      await expectOwner(await createJob(withCookie(laptop)), 2)
      await logOut(db(), 2, laptop.token)
      clock.advance(PAST_CACHE_MS)
      expectStatus(await createJob(withCookie(laptop)), 401, 'ai_unauthorized')
      // The other session is untouched.
      await expectOwner(await createJob(withCookie(phone)), 2)
    })
  })

  describe('roles given', () => {
    const EDITORS_CREATE = { AI_CREATE_CAPABILITY: 'edit_posts' }

    it('lets alice create at once when she is given a role with AI_CREATE_CAPABILITY (cookie, application password)', async () => {
      await start(EDITORS_CREATE)
      const alice = fixtureLogin('alice')
      expectStatus(await createJob(withCookie(alice)), 403, 'ai_forbidden')
      expectStatus(await createJob(basic(aliceApp.user, aliceApp.password)), 403, 'ai_forbidden')
      await setRoles(db(), 2, ['author'])
      await expectOwner(await createJob(withCookie(alice)), 2)
      await expectOwner(await createJob(basic(aliceApp.user, aliceApp.password)), 2)
    })

    it('opens the admin routes to alice at once when she is made an administrator', async () => {
      await start()
      const alice = fixtureLogin('alice')
      expectStatus(await adminJobs(withCookie(alice)), 403, 'ai_forbidden')
      expectStatus(await adminJobs(basic(aliceApp.user, aliceApp.password)), 403, 'ai_forbidden')
      await setRoles(db(), 2, ['administrator'])
      expectStatus(await adminJobs(withCookie(alice)), 200)
      expectStatus(await adminJobs(basic(aliceApp.user, aliceApp.password)), 200)
    })

    it('takes a role away once the cache has expired', async () => {
      await start(EDITORS_CREATE)
      await setRoles(db(), 2, ['author', 'administrator'])
      const alice = fixtureLogin('alice')
      await expectOwner(await createJob(withCookie(alice)), 2)
      expectStatus(await adminJobs(withCookie(alice)), 200)
      await setRoles(db(), 2, ['subscriber'])
      clock.advance(PAST_CACHE_MS)
      expectStatus(await createJob(withCookie(alice)), 403, 'ai_forbidden')
      expectStatus(await adminJobs(withCookie(alice)), 403, 'ai_forbidden')
    })
  })

  describe('tokens of WordPress users and AI_CREATE_CAPABILITY', () => {
    const EDITORS_CREATE = { AI_CREATE_CAPABILITY: 'edit_posts' }
    const token = (sub: string | number, claims: Record<string, unknown> = {}) => bearer({ sub, ...claims }, { nowMs: clock.now() })

    it("refuses a subscriber's token as her cookie is refused, and lets it read her jobs", async () => {
      await start(EDITORS_CREATE)
      expectStatus(await createJob(withCookie(fixtureLogin('alice'))), 403, 'ai_forbidden')
      expectStatus(await createJob(await token(2)), 403, 'ai_forbidden')
      expectStatus(await createJob(await token('2')), 403, 'ai_forbidden')
      const list = await app.inject({ method: 'GET', url: `${BASE}/jobs`, headers: await token(2) })
      expectStatus(list, 200)
    })

    it('lets the token of an author and of an administrator create, but never use the admin routes', async () => {
      await start(EDITORS_CREATE)
      await expectOwner(await createJob(await token(3)), 3)
      await expectOwner(await createJob(await token(1)), 1)
      expectStatus(await adminJobs(await token(1)), 403, 'ai_forbidden')
    })

    it('refuses the token of a user id that is not in wp_users, whatever the capability', async () => {
      await start()
      expectStatus(await createJob(await token(999)), 403, 'ai_forbidden')
      expectStatus(await createJob(await token(2)), 202)
    })

    it('keeps visitor tokens (sub 0) creating: no WordPress user to hold to a capability', async () => {
      await start(EDITORS_CREATE)
      const res = await createJob(await token(0, { sid: 'visitor-0123456789abcdef' }))
      expectStatus(res, 202)
      const row = await db().selectFrom('ai_jobs').select(['user_id', 'owner_key']).where('id', '=', res.json().job_id).executeTakeFirstOrThrow()
      expect({ user_id: Number(row.user_id), owner_key: row.owner_key }).toEqual({ user_id: 0, owner_key: 's:visitor-0123456789abcdef' })
    })

    it("honours a role given to the token's user at once, and one taken away after the cache", async () => {
      await start(EDITORS_CREATE)
      const aliceToken = await token(2)
      expectStatus(await createJob(aliceToken), 403, 'ai_forbidden')
      await setRoles(db(), 2, ['editor'])
      await expectOwner(await createJob(aliceToken), 2)
      await setRoles(db(), 2, ['subscriber'])
      clock.advance(PAST_CACHE_MS)
      expectStatus(await createJob(aliceToken), 403, 'ai_forbidden')
    })

    it('reads no WordPress row for a token create while the cache holds them', async () => {
      await start(EDITORS_CREATE)
      const bobToken = await token(3)
      await expectOwner(await createJob(bobToken), 3)
      const afterFirst = apps.wordpressReads()
      // The user row, the capabilities meta and the roles option (and whether it is a multisite).
      expect(afterFirst).toBeGreaterThan(0)
      expect(afterFirst).toBeLessThanOrEqual(4)
      for (let i = 0; i < 5; i++) await expectOwner(await createJob(bobToken), 3)
      expect(apps.wordpressReads()).toBe(afterFirst)
      clock.advance(PAST_CACHE_MS)
      await expectOwner(await createJob(bobToken), 3)
      expect(apps.wordpressReads() - afterFirst).toBeGreaterThan(0)
      expect(apps.wordpressReads() - afterFirst).toBeLessThanOrEqual(3)
    })
  })
})
