/**
 * The admin page in a real browser (Debian's Chromium, driven by playwright-core, which never
 * downloads one): the whole gateway listening on loopback over the fixture WordPress rows on
 * MariaDB, its pool running jobs with the echo provider. The administrator's logged-in cookie opens the
 * page; filtering to failed jobs and pressing Retry runs one again until its row shows
 * `succeeded`. Model names, errors and results that hold markup show as literal text, no script
 * of theirs runs, the page fetches nothing from another host and the CSP refuses nothing. A
 * subscriber's cookie gets the 403 page, no cookie the 401 page.
 *
 * The screenshot is kept under the OS temp dir on every run, and written to docs/admin-page.png
 * (the README's picture) when that file is missing or UPDATE_SCREENSHOTS=1 asks for a new one,
 * so a test run never changes a tracked file by itself.
 */
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import type { DatabaseHandle } from '../../src/db/database.js'
import { findJob, type NewJob } from '../../src/db/jobs-repository.js'
import { toDbTime } from '../../src/db/time.js'
import { testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'
import { SALT_ENV } from '../support/wordpress-app.js'
import { authVectors as v, dropWordPressFixturesMysql, loadWordPressFixturesMysql } from '../support/wordpress-fixtures.js'
import { logIn, type WordPressLogin } from '../support/wordpress-logins.js'

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic',
]
const DB = `gw_test_auth_admin_browser_${RUN}`
const DOCS_SCREENSHOT = fileURLToPath(new URL('../../docs/admin-page.png', import.meta.url))
const ARTIFACTS = join(tmpdir(), 'wp-ai-gateway-test-artifacts')
const MARKUP_MODEL = '<img src=x onerror="window.__pwned=1">'
const MARKUP_ERROR = '<script>window.__pwned=2</script> provider said <b>no</b>'
const MARKUP_OUTPUT = '<b>bold</b><script>window.__pwned=3</script>'
const MINUTE = 60_000
const DAY = 86_400_000

let gateway: FastifyInstance
let origin: string
let handle: DatabaseHandle
let context: BrowserContext
let profileDir: string
let adminLogin: WordPressLogin
let subscriberLogin: WordPressLogin
const failedIds: number[] = []
const markupIds: number[] = []

interface Finished {
  result?: string
  error?: string
  input?: number
  output?: number
  ms?: number
  attempts?: number
}

/** A job row as a worker leaves it (the usage columns of a finished job), for one multi-row INSERT. */
function jobRow(at: number, overrides: Partial<NewJob>, finished: Finished = {}): NewJob {
  const time = toDbTime(at)
  const input = `Summarize post ${randomBytes(3).toString('hex')}`
  return {
    user_id: 2, owner_key: 'u:2', status: 'succeeded', input_hash: randomBytes(32).toString('hex'),
    request_json: JSON.stringify({ model: 'echo', input, params: {} }), idempotency_key: randomBytes(32).toString('hex'),
    model: 'echo', request_id: `seed-${randomBytes(4).toString('hex')}`, created_at: time, updated_at: time, run_after: time,
    result_json: finished.result ?? null, error_text: finished.error ?? null, input_tokens: finished.input ?? null,
    output_tokens: finished.output ?? null, provider_ms: finished.ms ?? null, worker_ms: finished.ms === undefined ? null : finished.ms + 3,
    attempts: finished.attempts ?? (finished.ms === undefined ? 0 : 1),
    ...overrides,
  }
}

/** Inserts the rows in one statement; their ids, in order. */
async function seed(rows: NewJob[]): Promise<number[]> {
  await handle.db.insertInto('ai_jobs').values(rows).execute()
  const found = await handle.db.selectFrom('ai_jobs').select(['id', 'idempotency_key']).where('idempotency_key', 'in', rows.map((r) => r.idempotency_key)).execute()
  const ids = new Map(found.map((r) => [r.idempotency_key, Number(r.id)]))
  return rows.map((r) => ids.get(r.idempotency_key)!)
}

/** A few weeks of use, as the charts show it: some days busier than others, a slow provider now and then. */
function history(now: number): NewJob[] {
  const rows: NewJob[] = []
  for (let day = 24; day >= 1; day--) {
    const count = 4 + ((day * 7) % 9)
    for (let k = 0; k < count; k++) {
      const at = now - day * DAY + k * 37 * MINUTE
      const input = 80 + ((day * 31 + k * 17) % 400)
      const slow = k === count - 1 && day % 5 === 0
      const owner = { user_id: 1 + (k % 4), owner_key: `u:${1 + (k % 4)}` }
      rows.push(k % 11 === 5
        ? jobRow(at, { ...owner, status: 'canceled' })
        : jobRow(at, owner, { result: JSON.stringify({ output: `Summary ${day}.${k}`, model: 'echo' }), input, output: Math.round(input * 0.6), ms: slow ? 2400 + day * 40 : 300 + ((day * 53 + k * 29) % 500) }))
    }
  }
  return rows
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: the admin page's browser test drives Debian's Chromium (apt-get install chromium, as .ci/run does). playwright-core never downloads a browser.`)
  }
  const url = await loadWordPressFixturesMysql(DB)
  // The whole gateway, its pool running jobs with the echo provider, on a loopback port.
  gateway = await buildApp(testConfig({ DATABASE_URL: url, ...SALT_ENV, WORKER_CONCURRENCY: '2' }), { logger: false })
  await gateway.listen({ host: '127.0.0.1', port: 0 })
  origin = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`
  handle = gateway.db
  const now = Date.now()
  adminLogin = await logIn(handle.db, 1, { nowSeconds: Math.floor(now / 1000) })
  subscriberLogin = await logIn(handle.db, 2, { nowSeconds: Math.floor(now / 1000) })

  await seed(history(now))
  failedIds.push(...await seed([1, 2, 3].map((k) => jobRow(now - k * 3 * MINUTE, { status: 'failed' }, {
    error: 'echo: simulated HTTP 500 (echo_simulated_failure); no attempts are left', input: 40, attempts: 3,
  }))))
  // Waiting for a later run (a retry's backoff): pending, with a Cancel button, not claimed meanwhile.
  await seed([jobRow(now - MINUTE, { status: 'pending', run_after: toDbTime(now + DAY) })])
  // Markup where a model name, an error and a result go; older, so the first page does not show them.
  markupIds.push(...await seed([
    jobRow(now - 30 * DAY, { status: 'failed', model: MARKUP_MODEL }, { error: MARKUP_ERROR, attempts: 1 }),
    jobRow(now - 30 * DAY + MINUTE, { status: 'succeeded', model: MARKUP_MODEL }, { result: JSON.stringify({ output: MARKUP_OUTPUT }), input: 3, output: 3, ms: 5 }),
  ]))

  profileDir = mkdtempSync(join(tmpdir(), 'gw-admin-browser-'))
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1360, height: 900 }, timezoneId: 'UTC', locale: 'en-US',
  })
  // A step that waits in vain fails by itself, naming what it waited for, well within the test's time.
  context.setDefaultTimeout(8_000)
}, 60_000)

afterAll(async () => {
  await context?.close()
  if (profileDir) rmSync(profileDir, { recursive: true, force: true })
  await gateway?.close()
  await dropWordPressFixturesMysql(DB)
})

async function useLogin(login: WordPressLogin | undefined): Promise<void> {
  await context.clearCookies()
  if (login) await context.addCookies([{ name: v.logged_in_cookie_name, value: encodeURIComponent(login.cookie), url: origin }])
}

/** Every request the page makes, every failed answer, script error, CSP refusal and dialog. */
function watch(page: Page): { requests: string[]; problems: string[] } {
  const seen = { requests: [] as string[], problems: [] as string[] }
  page.on('request', (r) => seen.requests.push(r.url()))
  page.on('pageerror', (e) => seen.problems.push(`pageerror: ${e.message}`))
  page.on('dialog', (d) => {
    seen.problems.push(`dialog: ${d.message()}`)
    void d.dismiss()
  })
  // Behind the proxy, WordPress answers /favicon.ico; here nobody does.
  page.on('response', (r) => {
    if (r.status() >= 400 && new URL(r.url()).pathname !== '/favicon.ico') seen.problems.push(`${r.status()} for ${r.url()}`)
  })
  page.on('console', (m) => {
    if (/^Failed to load resource/.test(m.text())) return // the responses above say which
    if (m.type() === 'error' || /Content Security Policy/i.test(m.text())) seen.problems.push(`console ${m.type()}: ${m.text()}`)
  })
  return seen
}

/**
 * Waits until `selector` matches exactly `count` elements. Polled from here through the
 * protocol: the page's CSP (rightly) refuses the string evaluation a page-side poll would need.
 */
async function untilCount(page: Page, selector: string, count: number, timeoutMs = 8_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let seen = -1
  while (Date.now() < deadline) {
    seen = await page.locator(selector).count()
    if (seen === count) return
    await page.waitForTimeout(50)
  }
  throw new Error(`waited ${timeoutMs} ms for ${count} of ${selector}; there are ${seen}`)
}

const rowStatus = (page: Page, id: number) => page.locator(`#jobs-body tr[data-job-id="${id}"]`).getAttribute('data-status')

describe('the admin page in Chromium', () => {
  it('filters to failed jobs, retries one and sees it succeed; markup from the database stays text', async () => {
    await useLogin(adminLogin)
    const page = await context.newPage()
    const seen = watch(page)
    const res = await page.goto(`${origin}/wp-json/ai/v1/admin`)
    expect(res?.status()).toBe(200)
    expect(res?.headers()['content-security-policy']).toBe("default-src 'self'; frame-ancestors 'none'")
    await page.locator('#jobs-body tr').first().waitFor()
    await page.locator('#chart-tokens svg rect').first().waitFor({ state: 'attached' })

    await page.selectOption('select[name="status"]', 'failed')
    await page.click('#filters button[type="submit"]')
    const failedRows = [...failedIds, markupIds[0]!].map((id) => `#jobs-body tr[data-job-id="${id}"][data-status="failed"]`)
    await untilCount(page, failedRows.join(', '), failedRows.length)
    await untilCount(page, '#jobs-body tr', failedRows.length)
    const target = failedIds[0]!
    await page.locator(`#jobs-body tr[data-job-id="${target}"] button[data-action="retry"]`).click()
    // The pool runs it again with the echo provider; the row follows the job until it ends, and
    // the page says how it ended.
    await untilCount(page, `#jobs-body tr[data-job-id="${target}"][data-status="succeeded"]`, 1, 15_000)
    expect(await page.locator('#notice').textContent()).toBe(`Job ${target} has succeeded.`)
    const stored = await findJob(handle.db, target)
    expect(stored).toMatchObject({ status: 'succeeded', attempts: 1, error_text: null })
    expect(await rowStatus(page, failedIds[1]!)).toBe('failed')
    expect(await page.locator(`#jobs-body tr[data-job-id="${target}"] td.detail`).textContent()).toMatch(/^Summarize post /)

    // Every filter cleared: the newest jobs and the charts, as the README shows them.
    await page.click('#filters button[type="reset"]')
    await untilCount(page, '#jobs-body tr', 25)
    await page.locator('#chart-budgets', { hasText: 'No budgets configured.' }).waitFor()
    expect(await page.locator('#card-deliveries').isHidden()).toBe(true)
    expect(await page.locator('#chart-breakers').textContent()).toContain('echo')
    expect(await page.locator('#chart-latency svg circle').count()).toBeGreaterThan(20)
    await page.waitForTimeout(1_200) // the charts' refresh after the retry
    const shot = await page.screenshot({ fullPage: true })
    mkdirSync(ARTIFACTS, { recursive: true })
    writeFileSync(join(ARTIFACTS, `admin-page-${RUN}.png`), shot)
    if (!existsSync(DOCS_SCREENSHOT) || process.env.UPDATE_SCREENSHOTS === '1') writeFileSync(DOCS_SCREENSHOT, shot)

    // Markup in a model name, an error and a result: literal text, nothing of it parsed or run.
    await page.fill('input[name="model"]', MARKUP_MODEL)
    await page.click('#filters button[type="submit"]')
    await untilCount(page, '#jobs-body tr', 2)
    const cells = await page.locator('#jobs-body tr').evaluateAll((rows) => rows.map((r) => ({
      id: Number(r.getAttribute('data-job-id')),
      model: r.querySelector('td.model')?.textContent,
      detail: r.querySelector('td.detail')?.textContent,
    })))
    expect(cells).toEqual([
      { id: markupIds[1], model: MARKUP_MODEL, detail: MARKUP_OUTPUT },
      { id: markupIds[0], model: MARKUP_MODEL, detail: MARKUP_ERROR },
    ])
    expect(await page.locator('#jobs-body img, #jobs-body b, #jobs-body script').count()).toBe(0)
    expect(await page.evaluate('typeof window.__pwned')).toBe('undefined')

    expect(seen.problems).toEqual([])
    const foreign = seen.requests.filter((u) => !u.startsWith(`${origin}/`))
    expect(foreign).toEqual([])
    expect(seen.requests.some((u) => u.includes('/admin/assets/app.js?v='))).toBe(true)
    await page.close()
  })

  it("answers a subscriber's cookie with the 403 page, and no cookie with the 401 page", async () => {
    const page = await context.newPage()
    await useLogin(subscriberLogin)
    const forbidden = await page.goto(`${origin}/wp-json/ai/v1/admin`)
    expect(forbidden?.status()).toBe(403)
    expect(await page.locator('h1').textContent()).toBe('Not allowed')
    expect(await page.locator('body').textContent()).toContain('manage_options')

    await useLogin(undefined)
    const anonymous = await page.goto(`${origin}/wp-json/ai/v1/admin`)
    expect(anonymous?.status()).toBe(401)
    expect(await page.locator('a.button').getAttribute('href')).toBe(`/wp-login.php?redirect_to=${encodeURIComponent('/wp-json/ai/v1/admin')}`)
    await page.close()
  })
})
