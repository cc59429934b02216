/**
 * The `admin-page` auth kind (SPEC §4 `GET /admin`, §5): the WordPress logged-in cookie alone
 * opens the page for a user with AI_ADMIN_CAPABILITY, and the request carries a fresh `wp_rest`
 * nonce for that user and session, which the normal cookie + nonce path then accepts. The page
 * itself is not built here: a small Fastify app registers the gateway's own plugins (auth hook
 * included) and one probe route of that kind, over the fixture WordPress rows on MariaDB and
 * SQLite; the nonce is then used against the whole gateway on the same database.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { authPlugin } from '../../src/plugins/auth.js'
import { configPlugin } from '../../src/plugins/config.js'
import { dbPlugin } from '../../src/plugins/db.js'
import { httpPlugin } from '../../src/plugins/http.js'
import { metricsPlugin } from '../../src/plugins/metrics.js'
import { storePlugin } from '../../src/plugins/store.js'
import { bearer, DIALECTS } from '../helpers.js'
import { wordpressApps } from '../support/wordpress-app.js'
import { authVectors as v } from '../support/wordpress-fixtures.js'
import { logIn, setRoles } from '../support/wordpress-logins.js'

const BASE = '/wp-json/ai/v1'
const PROBE = `${BASE}/admin-page-probe`
const fixtureCase = (user: string) => v.cases.find((k) => k.user === user && k.expect_user_id > 0 && k.nonce)!
const admin = fixtureCase('admin')
const alice = fixtureCase('alice')
const cookieOf = (c: { cookie: string }) => `${v.logged_in_cookie_name}=${encodeURIComponent(c.cookie)}`
const aliceApp = v.application_passwords.find((p) => p.user === 'alice')!

describe.each(DIALECTS)('the admin page load (auth kind admin-page) on %s', (dialect) => {
  const apps = wordpressApps(dialect, `admin_page_${dialect}`)
  // The fixture's own time: WordPress recorded each session's nonce at it.
  const clock = manualClock(admin.now * 1000)
  let gateway: FastifyInstance
  let page: FastifyInstance

  afterEach(async () => {
    await page?.close()
  })
  afterAll(() => apps.cleanup())

  /** The whole gateway on the fixture rows, and beside it the probe app on the same database. */
  async function start(): Promise<void> {
    clock.set(admin.now * 1000)
    gateway = await apps.reset({}, clock)
    page = Fastify({ logger: false })
    await page.register(configPlugin, { config: gateway.config, clock })
    await page.register(metricsPlugin)
    await page.register(httpPlugin, {})
    await page.register(dbPlugin, { handle: apps.handle(), migrate: false })
    await page.register(storePlugin)
    await page.register(authPlugin)
    page.get(PROBE, { config: { auth: 'admin-page' } }, async (request) => ({
      page: request.adminPage,
      principal: { method: request.principal.method, userId: request.principal.userId, isAdmin: request.principal.isAdmin },
    }))
    await page.ready()
  }
  const openPage = (headers: Record<string, string>) => page.inject({ method: 'GET', url: PROBE, headers })
  const expectError = (res: Awaited<ReturnType<FastifyInstance['inject']>>, status: number, code: string) => {
    expect({ status: res.statusCode, body: res.body }).toMatchObject({ status })
    expect(res.json()).toMatchObject({ code, data: { status } })
  }

  it("opens for the administrator's cookie without a nonce, with the wp_rest nonce WordPress makes for that session", async () => {
    await start()
    const res = await openPage({ cookie: cookieOf(admin) })
    expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: 200 })
    const body = res.json()
    // WordPress's own wp_create_nonce('wp_rest') for this session, recorded at this time.
    expect(body).toEqual({ page: { nonce: admin.nonce, userId: 1, login: 'admin' }, principal: { method: 'cookie', userId: 1, isAdmin: true } })

    // The page's calls: the normal cookie + nonce path of the gateway accepts that nonce.
    const headers = { cookie: cookieOf(admin), 'x-wp-nonce': body.page.nonce as string }
    expect((await gateway.inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers })).statusCode).toBe(200)
    const created = await gateway.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify({ input: 'from the admin page' }) })
    expect({ status: created.statusCode, body: created.body }).toMatchObject({ status: 202 })
  })

  it("makes each session its own nonce, valid with that session's cookie only, and a fresh one a day later", async () => {
    await start()
    const laptop = await logIn(gateway.db.db, 1, { nowSeconds: admin.now })
    const res = await openPage({ cookie: laptop.cookieHeader })
    expect(res.statusCode).toBe(200)
    const nonce = res.json().page.nonce as string
    expect(nonce).toMatch(/^[0-9a-f]{10}$/)
    expect(nonce).not.toBe(admin.nonce)
    expect(nonce).toBe(laptop.nonce)
    const adminJobs = (cookie: string) => gateway.inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: { cookie, 'x-wp-nonce': nonce } })
    expect((await adminJobs(laptop.cookieHeader)).statusCode).toBe(200)
    expectError(await adminJobs(cookieOf(admin)), 403, 'rest_cookie_invalid_nonce')

    // Two ticks (a whole nonce life) later the old nonce is dead and the page hands out a new one.
    clock.advance(v.nonce_life * 1000)
    const later = await openPage({ cookie: laptop.cookieHeader })
    expect(later.statusCode).toBe(200)
    expect(later.json().page.nonce).not.toBe(nonce)
    expectError(await adminJobs(laptop.cookieHeader), 403, 'rest_cookie_invalid_nonce')
  })

  it('refuses a user without AI_ADMIN_CAPABILITY (403), and opens at once once she is given it', async () => {
    await start()
    expectError(await openPage({ cookie: cookieOf(alice) }), 403, 'ai_forbidden')
    await setRoles(gateway.db.db, 2, ['administrator'])
    const res = await openPage({ cookie: cookieOf(alice) })
    expect(res.statusCode).toBe(200)
    expect(res.json().page).toEqual({ nonce: alice.nonce, userId: 2, login: 'alice' })
  })

  it('answers 401 without a valid cookie, and takes no token or application password instead', async () => {
    await start()
    expectError(await openPage({}), 401, 'ai_unauthorized')
    for (const c of v.cases.filter((k) => k.expect_user_id === 0 && k.cookie !== '')) {
      const res = await openPage({ cookie: cookieOf(c) })
      expect({ name: c.name, status: res.statusCode }).toEqual({ name: c.name, status: 401 })
    }
    expectError(await openPage(await bearer({ sub: 1 }, { nowMs: clock.now() })), 401, 'ai_unauthorized')
    expectError(await openPage({ authorization: `Basic ${Buffer.from(`${aliceApp.user}:${aliceApp.password}`).toString('base64')}` }), 401, 'ai_unauthorized')
    // A valid cookie beside a token still decides alone.
    expectError(await openPage({ cookie: cookieOf(alice), ...(await bearer({ sub: 1 }, { nowMs: clock.now() })) }), 403, 'ai_forbidden')
  })
})
