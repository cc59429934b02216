import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { createLogger } from '../../src/logger.js'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { MYSQL_BASE, signToken, testConfig, TOKEN_SECRET } from '../helpers.js'
import { authVectors as v, loadWordPressFixturesSqlite } from '../support/wordpress-fixtures.js'

const WEBHOOK_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const SALT_ENV = Object.fromEntries(Object.entries(v.salts).map(([name, value]) => [`WP_${name}`, value as string]))

describe('secrets never reach the logs, even at trace level', () => {
  let dir: string
  let handle: DatabaseHandle
  let app: FastifyInstance
  const lines: string[] = []
  const clock = manualClock(v.cases[0]!.now * 1000)

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gw-logs-'))
    const url = `sqlite:${join(dir, 'gateway.sqlite')}`
    handle = await openDatabase({ url, prefix: 'wp_' })
    await loadWordPressFixturesSqlite(handle)
    const sink = new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done() } })
    const config = testConfig({ DATABASE_URL: url, AI_WEBHOOK_SECRET: WEBHOOK_SECRET, ...SALT_ENV })
    app = await buildApp(config, { logger: createLogger('trace', sink), clock, handle, startWorkers: false })
  })
  afterAll(async () => {
    await app?.close()
    await handle?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('logs requests with every kind of credential without the credential', async () => {
    const alice = v.cases.find((c) => c.user === 'alice' && c.expect_user_id === 2)!
    const cookie = `${v.logged_in_cookie_name}=${encodeURIComponent(alice.cookie)}`
    const token = await signToken({ sub: '2' }, { nowMs: clock.now() })
    const password = v.application_passwords[0]!
    const basic = (pw: string) => `Basic ${Buffer.from(`${password.user}:${pw}`).toString('base64')}`

    const answers = [
      await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: { authorization: `Bearer ${token}` }, payload: { input: 'token' } }),
      await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: { authorization: `Bearer ${token}x` }, payload: { input: 'bad token' } }),
      await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: { cookie, 'x-wp-nonce': alice.nonce! }, payload: { input: 'cookie' } }),
      await app.inject({ method: 'POST', url: `/wp-json/ai/v1/jobs?_wpnonce=${alice.nonce}`, headers: { cookie }, payload: { input: 'query nonce' } }),
      // The same parameter under an encoded name authenticates just the same, and is redacted the same.
      await app.inject({ method: 'POST', url: `/wp-json/ai/v1/jobs?_wp%6Eonce=${alice.nonce}`, headers: { cookie }, payload: { input: 'encoded name 1' } }),
      await app.inject({ method: 'POST', url: `/wp-json/ai/v1/jobs?a=1&%5Fwpnonce=${alice.nonce}`, headers: { cookie }, payload: { input: 'encoded name 2' } }),
      await app.inject({ method: 'POST', url: `/wp-json/ai/v1/jobs?%5F%77%70%6E%6F%6E%63%65=${alice.nonce}`, headers: { cookie }, payload: { input: 'encoded name 3' } }),
      await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: { authorization: basic(password.password) }, payload: { input: 'app password' } }),
      await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: { authorization: basic('wrong-password-123') }, payload: { input: 'bad password' } }),
      await app.inject({ method: 'POST', url: '/wp-json/ai/v1/webhook', headers: { 'content-type': 'application/json', ...signStandardWebhook({ secret: WEBHOOK_SECRET, id: 'msg_1', timestampSeconds: Math.floor(clock.now() / 1000), body: '{"job_id":1}' }) }, payload: '{"job_id":1}' }),
    ]
    expect(answers.map((a) => a.statusCode)).toEqual([202, 401, 202, 202, 202, 202, 202, 202, 401, 400])

    const text = lines.join('')
    // The requests were logged (so the test sees real log lines) ...
    expect(text).toContain('/wp-json/ai/v1/jobs')
    expect(text).toContain('[redacted]')
    // ... and no credential is in them, in any form.
    for (const secret of [token, alice.cookie, encodeURIComponent(alice.cookie), alice.nonce!, password.password, TOKEN_SECRET, WEBHOOK_SECRET, v.salts.LOGGED_IN_KEY!, v.salts.NONCE_SALT!]) {
      expect(text).not.toContain(secret)
    }
  })

  it('never logs the values of a failed SQL statement', async () => {
    // A real mysql2 error, as a 500 would log it: err.sql holds the statement with its values
    // filled in, and the message repeats a value.
    const { createConnection } = await import('mysql2/promise')
    const conn = await createConnection(`${MYSQL_BASE}/test`)
    let failure: unknown
    try {
      await conn.query('CREATE TEMPORARY TABLE t_secret (email VARCHAR(64) PRIMARY KEY)')
      await conn.query('INSERT INTO t_secret VALUES (?), (?)', ['someone@example.com', 'someone@example.com'])
    } catch (err) {
      failure = err
    } finally {
      await conn.end()
    }
    expect((failure as { sql?: string }).sql).toContain('someone@example.com')
    const before = lines.length
    app.log.error({ err: failure }, 'unhandled error')
    const logged = lines.slice(before).join('')
    expect(logged).toContain('ER_DUP_ENTRY')
    expect(logged).toContain('PRIMARY')
    expect(logged).not.toContain('someone@example.com')
    expect(logged).not.toContain('INSERT INTO')
  })
})
