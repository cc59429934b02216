/**
 * examples/wordpress/theme-snippet.js against the real gateway: the snippet runs in a VM context
 * whose `fetch` goes to app.inject (the browser's cookie jar holds alice's logged-in cookie unless
 * the request says `credentials: 'omit'`), and whose `wp.apiFetch` behaves like WordPress's
 * (root URL for pretty or plain permalinks, X-WP-Nonce, `_locale=user`, a non-2xx answer
 * rejects with the Response when `parse: false`). The test moves the job to `succeeded` itself
 * after the snippet has seen a 304, so the whole poll loop is exercised without a worker.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createContext, runInContext } from 'node:vm'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { signToken, testConfig } from '../helpers.js'
import { authVectors as v, loadWordPressFixturesSqlite } from '../support/wordpress-fixtures.js'

const SNIPPET = readFileSync(new URL('../../examples/wordpress/theme-snippet.js', import.meta.url), 'utf8')
const ORIGIN = 'http://127.0.0.1:3000'
const alice = v.cases.find((c) => c.user === 'alice' && c.expect_user_id === 2)!
const SALT_ENV = Object.fromEntries(Object.entries(v.salts).map(([name, value]) => [`WP_${name}`, value]))

interface Seen {
  method: string
  url: string
  headers: Record<string, string>
  status: number
}

describe('theme-snippet.js against the gateway', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gw_test_snippet-'))
  const url = `sqlite:${join(dir, 'gateway.sqlite')}`
  const clock = manualClock(alice.now * 1000)
  let handle: DatabaseHandle
  let app: FastifyInstance

  beforeAll(async () => {
    handle = await openDatabase({ url, prefix: 'wp_' })
    await loadWordPressFixturesSqlite(handle)
    app = await buildApp(testConfig({ DATABASE_URL: url, PUBLIC_URL: ORIGIN, ...SALT_ENV }), { logger: false, startWorkers: false, clock, handle })
  })
  afterAll(async () => {
    await app?.close()
    await handle?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  /** Loads the snippet into a fresh browser-like context; returns its API and what it sent. */
  function browser(aiGateway: Record<string, unknown>) {
    const seen: Seen[] = []
    let jobGets = 0

    async function fetch(input: string, init: { method?: string; headers?: Record<string, string>; body?: string; credentials?: string } = {}) {
      const target = new URL(input, ORIGIN)
      expect(target.origin).toBe(ORIGIN)
      const headers: Record<string, string> = { ...init.headers }
      // The browser's cookie jar: alice is logged in, unless the request omits credentials.
      if (init.credentials !== 'omit') headers.cookie = `${v.logged_in_cookie_name}=${encodeURIComponent(alice.cookie)}`
      const method = init.method ?? 'GET'
      const path = target.pathname + target.search
      const isJobGet = method === 'GET' && /jobs(\/|%2F)\d+/.test(path)
      // After the snippet has had its 304, the job finishes, as a worker would make it.
      if (isJobGet && ++jobGets === 3) {
        const id = Number(/(\d+)(&|$)/.exec(path.replace(/[?&]_locale=user/, ''))![1])
        await handle.db.updateTable('ai_jobs')
          .set((eb) => ({ status: 'succeeded', result_json: '{"output":"done"}', version: eb('version', '+', 1) }))
          .where('id', '=', id).execute()
      }
      const res = await app.inject({ method: method as 'GET', url: path, headers, ...(init.body !== undefined ? { payload: init.body } : {}) })
      seen.push({ method, url: path, headers, status: res.statusCode })
      const responseHeaders = new Headers()
      for (const [k, val] of Object.entries(res.headers)) if (val !== undefined) responseHeaders.set(k, Array.isArray(val) ? val.join(', ') : String(val))
      return new Response(res.statusCode === 304 || res.statusCode === 204 ? null : res.body, { status: res.statusCode, headers: responseHeaders })
    }

    /** What WordPress's wp-api-fetch does with the middlewares WordPress installs. */
    async function apiFetch(options: { path: string; method?: string; data?: unknown; parse?: boolean; headers?: Record<string, string>; [k: string]: unknown }) {
      const { path, data, parse = true, headers = {}, method = 'GET', ...rest } = options
      const root = String(aiGateway.root)
      let route = `${path}${path.includes('?') ? '&' : '?'}_locale=user`.replace(/^\//, '')
      if (root.includes('?')) route = route.replace('?', '&')
      const h: Record<string, string> = { Accept: 'application/json, */*;q=0.1', 'X-WP-Nonce': String(aiGateway.nonce), ...headers }
      if (data !== undefined) h['Content-Type'] = 'application/json'
      const res = await fetch(root + route, { ...rest, method, headers: h, credentials: 'include', ...(data !== undefined ? { body: JSON.stringify(data) } : {}) })
      if (res.status < 200 || res.status >= 300) {
        if (!parse) throw res
        throw await res.json()
      }
      return parse ? res.json() : res
    }

    const context = createContext({
      window: { aiGateway },
      wp: { apiFetch },
      fetch,
      // The poll loop's waits, without waiting.
      setTimeout: (fn: () => void) => setImmediate(fn),
    })
    runInContext(SNIPPET, context, { filename: 'theme-snippet.js' })
    const api = (context.window as { myThemeAi: { run(input: string): Promise<unknown> } }).myThemeAi
    return { api, seen }
  }

  const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T

  async function ownerOf(jobId: number): Promise<string> {
    const row = await handle.db.selectFrom('ai_jobs').select('owner_key').where('id', '=', jobId).executeTakeFirstOrThrow()
    return row.owner_key
  }

  function expectPollLoop(seen: Seen[]) {
    const gets = seen.filter((s) => s.method === 'GET')
    expect(gets.map((g) => g.status)).toEqual([200, 304, 200])
    const inm = gets.map((g) => Object.entries(g.headers).find(([k]) => k.toLowerCase() === 'if-none-match')?.[1])
    expect(inm[0]).toBeUndefined()
    expect(inm[1]).toMatch(/^"\d+\.\d+"$/)
    expect(inm[2]).toBe(inm[1])
  }

  for (const [permalinks, root] of [['pretty', `${ORIGIN}/wp-json/`], ['plain', `${ORIGIN}/?rest_route=/`]] as const) {
    it(`runs a visitor's job with the Bearer token (${permalinks} permalinks)`, async () => {
      const sid = `visitor${permalinks}0123456789abcdef`
      const token = await signToken({ sub: '0', sid }, { nowMs: clock.now() })
      const { api, seen } = browser({ root, loggedIn: false, nonce: '', token, tokenExpiresAt: Math.floor(Date.now() / 1000) + 3600 })
      const job = plain(await api.run(`visitor question, ${permalinks}`)) as { job_id: number; status: string; result: unknown }
      expect(job).toMatchObject({ status: 'succeeded', result: { output: 'done' } })
      expect(await ownerOf(job.job_id)).toBe(`s:${sid}`)
      expect(seen[0]).toMatchObject({ method: 'POST', status: 202 })
      // A visitor's requests carry the token and no cookie.
      for (const s of seen) {
        expect(s.headers.Authorization).toBe(`Bearer ${token}`)
        expect(s.headers.cookie).toBeUndefined()
      }
      expectPollLoop(seen)
    })

    it(`runs a logged-in user's job through wp.apiFetch with cookie + nonce (${permalinks} permalinks)`, async () => {
      const { api, seen } = browser({ root, loggedIn: true, nonce: alice.nonce, token: null, tokenExpiresAt: null })
      const job = plain(await api.run(`alice question, ${permalinks}`)) as { job_id: number; status: string; result: unknown }
      expect(job).toMatchObject({ status: 'succeeded', result: { output: 'done' } })
      expect(await ownerOf(job.job_id)).toBe('u:2')
      expect(seen[0]).toMatchObject({ method: 'POST', status: 202 })
      expect(seen[0]!.headers['X-WP-Nonce']).toBe(alice.nonce)
      expect(seen[0]!.url).toContain('_locale=user')
      expectPollLoop(seen)
    })
  }

  it('surfaces the WordPress error shape (a visitor without a token gets a clear error, no request)', async () => {
    const { api, seen } = browser({ root: `${ORIGIN}/wp-json/`, loggedIn: false, nonce: '', token: null, tokenExpiresAt: null })
    await expect(api.run('no token')).rejects.toThrow(/no token/)
    expect(seen).toEqual([])

    const bad = browser({ root: `${ORIGIN}/wp-json/`, loggedIn: false, nonce: '', token: 'not.a.token', tokenExpiresAt: Math.floor(Date.now() / 1000) + 60 })
    await expect(bad.api.run('bad token')).rejects.toMatchObject({ status: 401, code: 'ai_unauthorized' })
  })
})
