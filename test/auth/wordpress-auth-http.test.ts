/**
 * WordPress authentication through the HTTP API (app.inject), on MariaDB with the fixture tables
 * loaded and on SQLite with the fixture rows. The WordPress tables exist before buildApp, so the
 * app turns WordPress auth on by itself; the fixture salts come in as WP_* environment values and
 * the fixture's `now` is the injected clock (nonces depend on the 12-hour tick).
 */
import { RUN } from '../support/run-tag.js'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, InjectOptions } from 'fastify'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import type { Config } from '../../src/config.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { bearer, DIALECTS, testConfig, type Dialect } from '../helpers.js'
import {
  authVectors as v, dropWordPressFixturesMysql, loadWordPressFixturesMysql, loadWordPressFixturesSqlite,
} from '../support/wordpress-fixtures.js'

const BASE = '/wp-json/ai/v1'
/** The spec's bound for a logout or role change (SPEC §5). */
const LOGOUT_BOUND_MS = 10_000

const NOW_MS = v.cases[0]!.now * 1000
const valid = (user: string) => {
  const c = v.cases.find((k) => k.user === user && k.expect_user_id > 0 && k.nonce)
  if (!c) throw new Error(`no valid cookie case for ${user} in auth-vectors.json`)
  return c
}
const admin = valid('admin')
const alice = valid('alice')
const bob = valid('bob')
const carol68 = v.wp68.cases.find((c) => c.user === 'carol' && c.application_password)!
const aliceApp = v.application_passwords.find((p) => p.user === 'alice')!
const bobApp = v.application_passwords.find((p) => p.user === 'bob')!

/** The fixture salts, as a site configured only by environment passes them (config.ts: WP_<NAME>). */
const SALT_ENV = Object.fromEntries(Object.entries(v.salts).map(([name, value]) => [`WP_${name}`, value]))

const cookieFor = (cookie: string) => `${v.logged_in_cookie_name}=${encodeURIComponent(cookie)}`
const wpLogin = (c: { cookie: string; nonce: string | null }) => ({ cookie: cookieFor(c.cookie), 'x-wp-nonce': c.nonce! })
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })

let inputCounter = 0
/** Distinct inputs, so the dedupe window never turns a create into a replay. */
const freshInput = () => `hello from the http auth test ${++inputCounter}`

type Res = Awaited<ReturnType<FastifyInstance['inject']>>

function expectWpError(res: Res, status: number, code: string): void {
  expect({ status: res.statusCode, body: res.body }).toMatchObject({ status })
  expect(res.json()).toMatchObject({ code, data: { status } })
}

interface DialectSetup {
  /** Loads the fixture tables and builds an app on them (WordPress tables present before buildApp). */
  build(env: Record<string, string>, clock: ReturnType<typeof manualClock>): Promise<FastifyInstance>
  cleanup(): Promise<void>
}

function setupFor(dialect: Dialect): DialectSetup {
  const apps: FastifyInstance[] = []
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'gw_test_auth_http_sqlite-'))
    const url = `sqlite:${join(dir, 'gateway.sqlite')}`
    let handle: DatabaseHandle | undefined
    return {
      async build(env, clock) {
        if (!handle) {
          handle = await openDatabase({ url, prefix: v.table_prefix })
          await loadWordPressFixturesSqlite(handle)
        }
        const app = await buildApp(testConfig({ DATABASE_URL: url, ...SALT_ENV, ...env }), { logger: false, startWorkers: false, clock, handle })
        apps.push(app)
        return app
      },
      async cleanup() {
        for (const app of apps) await app.close()
        await handle?.close()
        rmSync(dir, { recursive: true, force: true })
      },
    }
  }
  const name = `gw_test_auth_http_mysql_${RUN}`
  let url: string | undefined
  return {
    async build(env, clock) {
      if (!url) {
        // A clean database each run: no ai_jobs rows left from an earlier one.
        await dropWordPressFixturesMysql(name)
        url = await loadWordPressFixturesMysql(name)
      }
      const app = await buildApp(testConfig({ DATABASE_URL: url, ...SALT_ENV, ...env }), { logger: false, startWorkers: false, clock })
      apps.push(app)
      return app
    },
    async cleanup() {
      for (const app of apps) await app.close()
      await dropWordPressFixturesMysql(name)
    },
  }
}

interface StoredJob {
  id: number
  user_id: number
  owner_key: string
  status: string
  attempts: number
}

describe.each(DIALECTS)('WordPress auth over HTTP on %s', (dialect) => {
  const setup = setupFor(dialect)
  const clock = manualClock(NOW_MS)
  let app: FastifyInstance
  let config: Readonly<Config>

  beforeAll(async () => {
    app = await setup.build({}, clock)
    config = app.config
  })
  afterAll(async () => {
    await setup.cleanup()
  })

  const inject = (options: InjectOptions) => app.inject(options)
  const createJob = (headers: Record<string, string>, options: { url?: string; remoteAddress?: string; on?: FastifyInstance } = {}) =>
    (options.on ?? app).inject({
      method: 'POST',
      url: options.url ?? `${BASE}/jobs`,
      headers: { 'content-type': 'application/json', ...headers },
      payload: JSON.stringify({ input: freshInput() }),
      ...(options.remoteAddress ? { remoteAddress: options.remoteAddress } : {}),
    })
  const createdId = (res: Res): number => {
    expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: 202 })
    const id = res.json().job_id
    expect(Number.isSafeInteger(id)).toBe(true)
    return id as number
  }
  async function stored(id: number): Promise<StoredJob> {
    const table = sql.id(`${config.tablePrefix}ai_jobs`)
    const r = await sql<StoredJob>`SELECT id, user_id, owner_key, status, attempts FROM ${table} WHERE id = ${id}`.execute(app.db.db)
    const row = r.rows[0]
    if (!row) throw new Error(`job ${id} is not in the table`)
    return { ...row, user_id: Number(row.user_id), attempts: Number(row.attempts) }
  }
  const expectOwner = async (id: number, userId: number) => {
    expect(await stored(id)).toMatchObject({ user_id: userId, owner_key: `u:${userId}` })
  }

  describe('setup', () => {
    it('uses the cookie name WordPress derives from the fixture siteurl', async () => {
      // No COOKIEHASH is configured, so the gateway must derive it from the `siteurl` option.
      expect(config.wordpress.COOKIEHASH).toBeUndefined()
      expect(createHash('md5').update(v.siteurl).digest('hex')).toBe(v.cookiehash)
      expect(v.logged_in_cookie_name).toBe(`wordpress_logged_in_${v.cookiehash}`)
      expect(app.auth.wordpress).toBeDefined()
      expect(config.wordpress.LOGGED_IN_KEY).toBe(v.salts.LOGGED_IN_KEY)
      expect(config.wordpress.NONCE_SALT).toBe(v.salts.NONCE_SALT)
    })
  })

  describe('cookie + REST nonce', () => {
    it("alice's cookie with her X-WP-Nonce creates a job owned by user 2", async () => {
      const res = await createJob(wpLogin(alice))
      const id = createdId(res)
      await expectOwner(id, 2)
      expect(res.headers.location).toBe(`${config.publicUrl}${BASE}/jobs/${id}`)
      const read = await inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: wpLogin(alice) })
      expect(read.statusCode).toBe(200)
      expect(read.json()).toMatchObject({ job_id: id, status: 'pending' })
    })

    it('takes the nonce from the _wpnonce query parameter like the header', async () => {
      const id = createdId(await createJob({ cookie: cookieFor(alice.cookie) }, { url: `${BASE}/jobs?_wpnonce=${alice.nonce}` }))
      await expectOwner(id, 2)
    })

    it("refuses her cookie with bob's nonce: 403 rest_cookie_invalid_nonce", async () => {
      const res = await createJob({ cookie: cookieFor(alice.cookie), 'x-wp-nonce': bob.nonce! })
      expectWpError(res, 403, 'rest_cookie_invalid_nonce')
      const viaQuery = await createJob({ cookie: cookieFor(alice.cookie) }, { url: `${BASE}/jobs?_wpnonce=${bob.nonce}` })
      expectWpError(viaQuery, 403, 'rest_cookie_invalid_nonce')
    })

    it('refuses a nonce made for another action', async () => {
      const other = v.nonce_cases.find((c) => c.name.includes('another action'))!
      expectWpError(await createJob({ cookie: cookieFor(other.cookie), 'x-wp-nonce': other.nonce }), 403, 'rest_cookie_invalid_nonce')
    })

    it('treats her cookie without a nonce as anonymous: 401', async () => {
      const res = await createJob({ cookie: cookieFor(alice.cookie) })
      expectWpError(res, 401, 'ai_unauthorized')
    })

    it('ends the search at a valid cookie without a nonce, even with a valid token beside it', async () => {
      const res = await createJob({ cookie: cookieFor(alice.cookie), ...(await bearer({ sub: '2' }, { nowMs: clock.now() })) })
      expectWpError(res, 401, 'ai_unauthorized')
    })

    it('refuses cookies WordPress refuses (tampered, swapped name, expired, unknown session)', async () => {
      for (const c of v.cases.filter((k) => k.expect_user_id === 0 && k.cookie !== '')) {
        const res = await createJob({ cookie: cookieFor(c.cookie), 'x-wp-nonce': alice.nonce! })
        expect({ name: c.name, status: res.statusCode }).toEqual({ name: c.name, status: 401 })
      }
    })

    it('accepts the WordPress 6.8 cookie of carol ($wp$ hash)', async () => {
      const carolCookie = v.wp68.cases.find((c) => c.user === 'carol' && c.expect_user_id === 4)!
      const id = createdId(await createJob({ cookie: cookieFor(carolCookie.cookie), 'x-wp-nonce': carolCookie.nonce! }))
      await expectOwner(id, 4)
    })

    it('refuses her cookie once her session is destroyed, within the 10 s bound', async () => {
      const db = app.db.db
      const saved = await db.selectFrom('usermeta').selectAll().where('user_id', '=', 2).where('meta_key', '=', 'session_tokens').executeTakeFirstOrThrow()
      try {
        // Warm the cache, as a burst of requests does.
        createdId(await createJob(wpLogin(alice)))
        // WP_Session_Tokens::destroy() on logout: the last session removes the meta row.
        await db.deleteFrom('usermeta').where('umeta_id', '=', saved.umeta_id).execute()
        // Designed: rows are cached briefly (5 s), so the request right after the logout still passes.
        createdId(await createJob(wpLogin(alice)))
        clock.advance(LOGOUT_BOUND_MS + 1)
        expectWpError(await createJob(wpLogin(alice)), 401, 'ai_unauthorized')
        expectWpError(await inject({ method: 'GET', url: `${BASE}/jobs`, headers: wpLogin(alice) }), 401, 'ai_unauthorized')
      } finally {
        await db.insertInto('usermeta').values(saved).execute()
        clock.advance(LOGOUT_BOUND_MS + 1)
      }
      // Her session back in the table: the same cookie works again (so the refusal was the logout).
      createdId(await createJob(wpLogin(alice)))
    })

    it('refuses a session whose expiration passed in the table (session updated, not deleted)', async () => {
      const db = app.db.db
      const saved = await db.selectFrom('usermeta').selectAll().where('user_id', '=', 3).where('meta_key', '=', 'session_tokens').executeTakeFirstOrThrow()
      try {
        createdId(await createJob(wpLogin(bob)))
        // The same session with its expiration moved into the past.
        const expired = saved.meta_value!.replace(/s:10:"expiration";i:\d+;/, `s:10:"expiration";i:${Math.floor(clock.now() / 1000) - 60};`)
        expect(expired).not.toBe(saved.meta_value)
        await db.updateTable('usermeta').set({ meta_value: expired }).where('umeta_id', '=', saved.umeta_id).execute()
        clock.advance(LOGOUT_BOUND_MS + 1)
        expectWpError(await createJob(wpLogin(bob)), 401, 'ai_unauthorized')
      } finally {
        await db.updateTable('usermeta').set({ meta_value: saved.meta_value }).where('umeta_id', '=', saved.umeta_id).execute()
        clock.advance(LOGOUT_BOUND_MS + 1)
      }
      createdId(await createJob(wpLogin(bob)))
    })
  })

  describe('admin capability', () => {
    let aliceJob: number
    let bobJob: number
    let carolJob: number

    beforeAll(async () => {
      aliceJob = createdId(await createJob(wpLogin(alice)))
      bobJob = createdId(await createJob(wpLogin(bob)))
      carolJob = createdId(await createJob(basic(carol68.user, carol68.application_password!)))
    })

    it('refuses the subscriber alice on GET /admin/jobs: 403 ai_forbidden', async () => {
      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: wpLogin(alice) }), 403, 'ai_forbidden')
      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: basic(aliceApp.user, aliceApp.password) }), 403, 'ai_forbidden')
      // bob is an author: no manage_options either.
      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: wpLogin(bob) }), 403, 'ai_forbidden')
    })

    it('needs credentials at all: 401 without', async () => {
      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/jobs` }), 401, 'ai_unauthorized')
    })

    it("shows the administrator every user's jobs", async () => {
      const res = await inject({ method: 'GET', url: `${BASE}/admin/jobs?limit=100`, headers: wpLogin(admin) })
      expect(res.statusCode).toBe(200)
      const jobs = res.json().jobs as Array<{ job_id: number; user_id: number; owner_key?: string }>
      const byId = new Map(jobs.map((j) => [j.job_id, j]))
      expect(byId.get(aliceJob)).toMatchObject({ user_id: 2 })
      expect(byId.get(bobJob)).toMatchObject({ user_id: 3 })
      expect(byId.get(carolJob)).toMatchObject({ user_id: 4 })
      // The response schema sends only the job JSON and user_id: never the owner key (a visitor's sid).
      for (const job of jobs) expect(job).not.toHaveProperty('owner_key')
      const filtered = await inject({ method: 'GET', url: `${BASE}/admin/jobs?user_id=3&limit=100`, headers: wpLogin(admin) })
      expect(filtered.statusCode).toBe(200)
      const users = new Set((filtered.json().jobs as Array<{ user_id: number }>).map((j) => j.user_id))
      expect([...users]).toEqual([3])
    })

    it("refuses a public token whose sub is the administrator's id: 403", async () => {
      const token = await bearer({ sub: '1' }, { nowMs: clock.now() })
      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: token }), 403, 'ai_forbidden')
      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/usage.csv`, headers: token }), 403, 'ai_forbidden')
      expectWpError(await inject({ method: 'POST', url: `${BASE}/admin/jobs/${aliceJob}/retry`, headers: token }), 403, 'ai_forbidden')
      // Nor does the token read another user's job.
      expectWpError(await inject({ method: 'GET', url: `${BASE}/jobs/${aliceJob}`, headers: token }), 404, 'ai_not_found')
    })

    it("lets the admin read another user's job by id, but not bob", async () => {
      const asAdmin = await inject({ method: 'GET', url: `${BASE}/jobs/${aliceJob}`, headers: wpLogin(admin) })
      expect(asAdmin.statusCode).toBe(200)
      expect(asAdmin.json()).toMatchObject({ job_id: aliceJob })
      expectWpError(await inject({ method: 'GET', url: `${BASE}/jobs/${aliceJob}`, headers: wpLogin(bob) }), 404, 'ai_not_found')
      // Ownership before If-None-Match: bob with the right ETag still gets 404.
      const etag = asAdmin.headers.etag as string
      expect(etag).toBeTruthy()
      expectWpError(await inject({ method: 'GET', url: `${BASE}/jobs/${aliceJob}`, headers: { ...wpLogin(bob), 'if-none-match': etag } }), 404, 'ai_not_found')
    })

    it('retries a failed or succeeded job (pending, attempts 0) and refuses a pending one with 409', async () => {
      const db = app.db.db
      const failed = createdId(await createJob(wpLogin(alice)))
      const succeeded = createdId(await createJob(wpLogin(bob)))
      await db.updateTable('ai_jobs').set({ status: 'failed', attempts: 3, error_text: 'provider said no' }).where('id', '=', failed).execute()
      await db.updateTable('ai_jobs').set({ status: 'succeeded', attempts: 1, result_json: '{"text":"done"}' }).where('id', '=', succeeded).execute()

      for (const id of [failed, succeeded]) {
        const res = await inject({ method: 'POST', url: `${BASE}/admin/jobs/${id}/retry`, headers: wpLogin(admin) })
        expect({ id, status: res.statusCode, body: res.body }).toMatchObject({ id, status: 200 })
        expect(res.json()).toMatchObject({ job_id: id, status: 'pending', attempts: 0, result: null, error: null })
        expect(await stored(id)).toMatchObject({ status: 'pending', attempts: 0 })
      }
      // Now pending: nothing to retry.
      expectWpError(await inject({ method: 'POST', url: `${BASE}/admin/jobs/${failed}/retry`, headers: wpLogin(admin) }), 409, 'ai_job_finished')
      expectWpError(await inject({ method: 'POST', url: `${BASE}/admin/jobs/${aliceJob}/retry`, headers: wpLogin(admin) }), 409, 'ai_job_finished')
      // A subscriber cannot retry, even her own job.
      await db.updateTable('ai_jobs').set({ status: 'failed' }).where('id', '=', aliceJob).execute()
      expectWpError(await inject({ method: 'POST', url: `${BASE}/admin/jobs/${aliceJob}/retry`, headers: wpLogin(alice) }), 403, 'ai_forbidden')
      expect(await stored(aliceJob)).toMatchObject({ status: 'failed' })
      expectWpError(await inject({ method: 'POST', url: `${BASE}/admin/jobs/999999999/retry`, headers: wpLogin(admin) }), 404, 'ai_not_found')
    })

    it('serves usage.csv to the admin and refuses the subscriber', async () => {
      const res = await inject({ method: 'GET', url: `${BASE}/admin/usage.csv`, headers: wpLogin(admin) })
      expect(res.statusCode).toBe(200)
      expect(res.headers['content-type']).toMatch(/^text\/csv/)
      const lines = res.body.trim().split('\n')
      const header = lines[0]!.split(',')
      expect(header).toEqual(expect.arrayContaining(['day', 'user_id', 'model', 'jobs']))
      const rows = lines.slice(1).map((line) => Object.fromEntries(line.split(',').map((cell, i) => [header[i]!, cell.replace(/^"|"$/g, '')])))
      const day = new Date(clock.now()).toISOString().slice(0, 10)
      const aliceRow = rows.find((r) => r.user_id === '2' && r.model === 'echo')
      expect(aliceRow).toMatchObject({ day })
      expect(Number(aliceRow!.jobs)).toBeGreaterThanOrEqual(1)
      expect(rows.find((r) => r.user_id === '4')).toBeDefined()

      expectWpError(await inject({ method: 'GET', url: `${BASE}/admin/usage.csv`, headers: wpLogin(alice) }), 403, 'ai_forbidden')
    })
  })

  describe('application passwords', () => {
    it('creates jobs for their user: plain, chunked with spaces, and login by e-mail', async () => {
      await expectOwner(createdId(await createJob(basic(aliceApp.user, aliceApp.password))), 2)
      await expectOwner(createdId(await createJob(basic(aliceApp.user, aliceApp.chunked))), 2)
      await expectOwner(createdId(await createJob(basic('alice@example.com', aliceApp.password))), 2)
    })

    it("creates jobs for carol with her $generic$ (WordPress 6.8) password", async () => {
      await expectOwner(createdId(await createJob(basic(carol68.user, carol68.application_password!))), 4)
      await expectOwner(createdId(await createJob(basic('carol@example.com', carol68.application_password!))), 4)
    })

    it('refuses a wrong password with 401, and the login password is no application password', async () => {
      expectWpError(await createJob(basic('alice', 'wrongwrongwrongwrongwron'), { remoteAddress: '10.0.0.1' }), 401, 'ai_unauthorized')
      expectWpError(await createJob(basic('dave', 'dave-password-123'), { remoteAddress: '10.0.0.1' }), 401, 'ai_unauthorized')
    })

    it('throttles ten wrong passwords in a row (429, Retry-After), then even the right one', async () => {
      const ip = '10.0.0.66'
      const statuses: number[] = []
      let last: Res | undefined
      for (let i = 0; i < 10; i++) {
        last = await createJob(basic(bobApp.user, `wrong-password-${i}`), { remoteAddress: ip })
        statuses.push(last.statusCode)
      }
      expect(statuses.slice(0, 9)).toEqual(Array(9).fill(401))
      expect(statuses[9]).toBe(429)
      const retryAfter = Number(last!.headers['retry-after'])
      expect(retryAfter).toBeGreaterThan(0)
      expect(retryAfter).toBeLessThanOrEqual(3600)
      expectWpError(last!, 429, 'ai_too_many_auth_failures')

      // The right password, within the window: still throttled, from the same address…
      const right = await createJob(basic(bobApp.user, bobApp.password), { remoteAddress: ip })
      expectWpError(right, 429, 'ai_too_many_auth_failures')
      expect(Number(right.headers['retry-after'])).toBeGreaterThan(0)
      // …and from another address (the login is throttled too)…
      expectWpError(await createJob(basic(bobApp.user, bobApp.password), { remoteAddress: '10.0.0.67' }), 429, 'ai_too_many_auth_failures')
      // …and another user's right password from the throttled address (dave's was never verified,
      // so no cached success lets it skip the throttle).
      const dave = v.wp68.cases.find((c) => c.user === 'dave')!
      expectWpError(await createJob(basic(dave.user, dave.application_password!), { remoteAddress: ip }), 429, 'ai_too_many_auth_failures')

      // Once Retry-After has passed, the right password works again.
      clock.advance(retryAfter * 1000 + 1000)
      await expectOwner(createdId(await createJob(basic(bobApp.user, bobApp.password), { remoteAddress: ip })), 3)
    })
  })

  describe('plain permalinks and subdirectory installs', () => {
    it('serves /?rest_route=/ai/v1/jobs and /index.php?rest_route=/ai/v1/jobs', async () => {
      for (const url of ['/?rest_route=/ai/v1/jobs', '/index.php?rest_route=/ai/v1/jobs', '/?rest_route=%2Fai%2Fv1%2Fjobs']) {
        const res = await createJob(wpLogin(alice), { url })
        expect({ url, status: res.statusCode }).toEqual({ url, status: 202 })
        await expectOwner(res.json().job_id, 2)
      }
      // _wpnonce beside rest_route, and a GET of the job through the same form.
      const id = createdId(await createJob({ cookie: cookieFor(alice.cookie) }, { url: `/?rest_route=/ai/v1/jobs&_wpnonce=${alice.nonce}` }))
      const read = await inject({ method: 'GET', url: `/index.php?rest_route=/ai/v1/jobs/${id}`, headers: wpLogin(alice) })
      expect(read.statusCode).toBe(200)
      expect(read.json()).toMatchObject({ job_id: id })
      // apiFetch's own query parameter rides along (it joins it with & on plain permalinks).
      createdId(await createJob(wpLogin(alice), { url: '/?rest_route=/ai/v1/jobs&_locale=user' }))
      // Other rest_route values are not ours.
      expect((await inject({ method: 'GET', url: '/?rest_route=/wp/v2/posts', headers: wpLogin(alice) })).statusCode).toBe(404)
      // A `?` inside the route is part of the route, as in WordPress: no route, and it cannot
      // swallow the parameters after it.
      expect((await inject({ method: 'GET', url: `/?rest_route=%2Fai%2Fv1%2Fjobs%3Flimit%3D1&_wpnonce=${alice.nonce}`, headers: { cookie: cookieFor(alice.cookie) } })).statusCode).toBe(404)
    })

    it('serves a subdirectory install under /blog', async () => {
      const blog = await setup.build({ PUBLIC_URL: 'http://127.0.0.1:3000/blog' }, clock)
      for (const url of ['/blog/wp-json/ai/v1/jobs', '/blog/?rest_route=/ai/v1/jobs', '/blog/index.php?rest_route=/ai/v1/jobs']) {
        const res = await createJob(wpLogin(alice), { url, on: blog })
        expect({ url, status: res.statusCode }).toEqual({ url, status: 202 })
        const id = res.json().job_id as number
        await expectOwner(id, 2)
        expect(res.headers.location).toBe(`http://127.0.0.1:3000/blog/wp-json/ai/v1/jobs/${id}`)
      }
      // The root paths belong to no route on a subdirectory install.
      expect((await createJob(wpLogin(alice), { on: blog })).statusCode).toBe(404)
      expect((await createJob(wpLogin(alice), { url: '/?rest_route=/ai/v1/jobs', on: blog })).statusCode).toBe(404)
    })
  })
})
