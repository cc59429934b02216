/**
 * WordPress's tables created after the gateway started (docker compose starts it beside a
 * WordPress not yet installed): WordPress authentication turns on by itself once they exist,
 * looked for again at most every 30 s by requests that carry WordPress credentials, on MariaDB
 * and SQLite. The clock is injected.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, testConfig, type Dialect, DIALECTS } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { SALT_ENV } from '../support/wordpress-app.js'
import { authVectors as v, loadWordPressFixturesMysql, loadWordPressFixturesSqlite } from '../support/wordpress-fixtures.js'

const BASE = '/wp-json/ai/v1'
const NOW_MS = v.cases[0]!.now * 1000
/** How often a process looks again for WordPress's tables while it has not found them. */
const LOOK_AGAIN_MS = 30_000
const alice = v.cases.find((k) => k.user === 'alice' && k.expect_user_id > 0 && k.nonce)!
const aliceApp = v.application_passwords.find((p) => p.user === 'alice')!
const aliceCookie = { cookie: `${v.logged_in_cookie_name}=${encodeURIComponent(alice.cookie)}`, 'x-wp-nonce': alice.nonce! }
const aliceBasic = { authorization: `Basic ${Buffer.from(`${aliceApp.user}:${aliceApp.password}`).toString('base64')}` }

interface Gateway {
  app: FastifyInstance
  /** Creates WordPress's tables (and rows), as WordPress's installer does. */
  installWordPress(): Promise<void>
  close(): Promise<void>
}

/** A gateway started on a database that has no WordPress tables yet. */
async function gatewayBeforeWordPress(dialect: Dialect, clock: ReturnType<typeof manualClock>, env: Record<string, string>): Promise<Gateway> {
  if (dialect === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'gw_test_auth_detect-'))
    const url = `sqlite:${join(dir, 'gateway.sqlite')}`
    const handle: DatabaseHandle = await openDatabase({ url, prefix: v.table_prefix })
    const app = await buildApp(testConfig({ DATABASE_URL: url, ...SALT_ENV, ...env }), { logger: false, startWorkers: false, clock, handle })
    return {
      app,
      installWordPress: () => loadWordPressFixturesSqlite(handle),
      close: async () => {
        await app.close()
        await handle.close()
        rmSync(dir, { recursive: true, force: true })
      },
    }
  }
  const name = `gw_test_auth_detect_${RUN}`
  const url = await freshMysqlDatabase(name)
  const app = await buildApp(testConfig({ DATABASE_URL: url, ...SALT_ENV, ...env }), { logger: false, startWorkers: false, clock })
  return {
    app,
    installWordPress: async () => {
      await loadWordPressFixturesMysql(name)
    },
    close: async () => {
      await app.close()
      await dropMysqlDatabase(name)
    },
  }
}

describe.each(DIALECTS)('WordPress tables that appear after start-up, on %s', (dialect) => {
  const clock = manualClock(NOW_MS)
  let gateway: Gateway | undefined

  afterEach(async () => {
    await gateway?.close()
    gateway = undefined
  })

  let inputCounter = 0
  const createJob = (app: FastifyInstance, headers: Record<string, string>) => app.inject({
    method: 'POST', url: `${BASE}/jobs`,
    headers: { 'content-type': 'application/json', ...headers },
    payload: JSON.stringify({ input: `detect test ${++inputCounter}` }),
  })
  async function ownerOf(app: FastifyInstance, res: Awaited<ReturnType<FastifyInstance['inject']>>): Promise<string> {
    expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: 202 })
    const row = await app.db.db.selectFrom('ai_jobs').select('owner_key').where('id', '=', res.json().job_id).executeTakeFirstOrThrow()
    return row.owner_key
  }

  it('turns cookies and application passwords on once the tables exist, looking again at most every 30 s', async () => {
    clock.set(NOW_MS)
    gateway = await gatewayBeforeWordPress(dialect, clock, {})
    const { app } = gateway
    expect(app.auth.wordpress).toBeUndefined()
    expect((await createJob(app, aliceCookie)).statusCode).toBe(401)
    expect((await createJob(app, aliceBasic)).statusCode).toBe(401)

    await gateway.installWordPress()
    // Looked for at start-up a moment ago: not again yet.
    expect((await createJob(app, aliceCookie)).statusCode).toBe(401)
    expect(app.auth.wordpress).toBeUndefined()

    clock.advance(LOOK_AGAIN_MS)
    expect(await ownerOf(app, await createJob(app, aliceCookie))).toBe('u:2')
    expect(app.auth.wordpress).toBeDefined()
    expect(await ownerOf(app, await createJob(app, aliceBasic))).toBe('u:2')
  })

  it('looks again for a token of a WordPress user, which is then held to AI_CREATE_CAPABILITY', async () => {
    clock.set(NOW_MS)
    gateway = await gatewayBeforeWordPress(dialect, clock, { AI_CREATE_CAPABILITY: 'edit_posts' })
    const { app } = gateway
    const aliceToken = await bearer({ sub: 2 }, { nowMs: clock.now() })
    // No WordPress tables: a token works as it always has.
    expect(await ownerOf(app, await createJob(app, aliceToken))).toBe('u:2')

    await gateway.installWordPress()
    clock.advance(LOOK_AGAIN_MS)
    // alice is a subscriber: no edit_posts, with her token as with her cookie.
    const refused = await createJob(app, aliceToken)
    expect({ status: refused.statusCode, code: refused.json().code }).toEqual({ status: 403, code: 'ai_forbidden' })
    expect(app.auth.wordpress).toBeDefined()
    // A visitor's token never needed the tables.
    expect(await ownerOf(app, await createJob(app, await bearer({ sub: 0, sid: 'visitor-0123456789abcdef' }, { nowMs: clock.now() })))).toBe('s:visitor-0123456789abcdef')
  })
})
