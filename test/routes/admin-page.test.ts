/**
 * GET /admin, the site owner's page (SPEC §4, §5): it opens with the WordPress logged-in cookie
 * alone for a user with AI_ADMIN_CAPABILITY, carries a fresh nonce that the normal cookie + nonce
 * path accepts, is locked down by its headers (CSP, no-store, no framing), and loads nothing but
 * the gateway's own script and stylesheet. Over the fixture WordPress rows on SQLite and MariaDB.
 */
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminPageHtml, errorPageHtml, escapeHtml } from '../../src/admin-page/page-html.js'
import { manualClock } from '../../src/clock.js'
import { bearer, DIALECTS } from '../helpers.js'
import { wordpressApps } from '../support/wordpress-app.js'
import { authVectors as v } from '../support/wordpress-fixtures.js'

const BASE = '/wp-json/ai/v1'
const CSP = "default-src 'self'; frame-ancestors 'none'"
const HTML_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
const fixtureCase = (user: string) => v.cases.find((k) => k.user === user && k.expect_user_id > 0 && k.nonce)!
const admin = fixtureCase('admin')
const alice = fixtureCase('alice')
const cookieOf = (c: { cookie: string }) => `${v.logged_in_cookie_name}=${encodeURIComponent(c.cookie)}`
const aliceApp = v.application_passwords.find((p) => p.user === 'alice')!

/** The `content` of `<meta name="…">`, as a browser reads it (the page escapes it). */
function metaContent(html: string, name: string): string | undefined {
  const m = new RegExp(`<meta name="${name}" content="([^"]*)">`).exec(html)
  return m?.[1]?.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')
}

function expectLockedDown(res: LightMyRequestResponse): void {
  expect(res.headers['content-type']).toBe('text/html; charset=utf-8')
  expect(res.headers['content-security-policy']).toBe(CSP)
  expect(res.headers['cache-control']).toBe('private, no-store')
  expect(res.headers['x-frame-options']).toBe('DENY')
  expect(res.headers['referrer-policy']).toBe('same-origin')
  expect(res.headers['x-content-type-options']).toBe('nosniff')
}

/** Every absolute URL in a text: `http://…`, `https://…`, and protocol-relative `//host` in src, href or url(). */
function absoluteUrls(text: string): string[] {
  return [...text.matchAll(/https?:\/\/[^\s"'`)<>]+|(?:src=|href=|url\()["']?\/\/[^\s"'`)<>]+/gi)].map((m) => m[0])
}

describe.each(DIALECTS)('GET /admin, the admin page (%s)', (dialect) => {
  const apps = wordpressApps(dialect, `admin_page_route_${dialect}`)
  // The fixture's own time: WordPress recorded each session's nonce at it.
  const clock = manualClock(admin.now * 1000)
  let app: FastifyInstance
  let page: LightMyRequestResponse

  beforeAll(async () => {
    app = await apps.reset({}, clock)
    page = await app.inject({ method: 'GET', url: `${BASE}/admin`, headers: { cookie: cookieOf(admin), accept: HTML_ACCEPT } })
  })
  afterAll(() => apps.cleanup())

  const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers })

  it("opens for the administrator's cookie alone, with the headers that lock it down", () => {
    expect({ status: page.statusCode, body: page.body.slice(0, 300) }).toMatchObject({ status: 200 })
    expectLockedDown(page)
    expect(page.body).toMatch(/^<!doctype html>/)
    expect(page.body).toContain('Signed in as <strong>admin</strong>')
  })

  it('embeds the nonce WordPress makes for that session, and the admin API takes it with the cookie', async () => {
    const nonce = metaContent(page.body, 'ai-gateway-nonce')
    expect(nonce).toBe(admin.nonce)
    expect(metaContent(page.body, 'ai-gateway-api')).toBe(BASE)
    const headers = { cookie: cookieOf(admin), 'x-wp-nonce': nonce! }
    expect((await get(`${BASE}/admin/jobs`, headers)).statusCode).toBe(200)
    expect((await get(`${BASE}/admin/stats`, headers)).statusCode).toBe(200)
    // The nonce is nothing without the cookie it was made for.
    expect((await get(`${BASE}/admin/jobs`, { 'x-wp-nonce': nonce! })).statusCode).toBe(401)
    expect((await get(`${BASE}/admin/jobs`, { cookie: cookieOf(alice), 'x-wp-nonce': nonce! })).json()).toMatchObject({ code: 'rest_cookie_invalid_nonce' })
  })

  it('holds no inline script or style, which the CSP would refuse anyway', () => {
    const scripts = [...page.body.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)]
    expect(scripts).toHaveLength(1)
    expect(scripts[0]![1]).toMatch(/ src="[^"]+"/)
    expect(scripts[0]![2]).toBe('')
    expect(page.body).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=|javascript:/i)
  })

  it('refuses a subscriber with 403 and a visitor without a login with 401; a browser reads why, as a page', async () => {
    const subscriberJson = await get(`${BASE}/admin`, { cookie: cookieOf(alice) })
    expect(subscriberJson.statusCode).toBe(403)
    expect(subscriberJson.json()).toMatchObject({ code: 'ai_forbidden', data: { status: 403 } })
    const subscriberPage = await get(`${BASE}/admin`, { cookie: cookieOf(alice), accept: HTML_ACCEPT })
    expect(subscriberPage.statusCode).toBe(403)
    expectLockedDown(subscriberPage)
    expect(subscriberPage.body).toContain('manage_options')
    expect(subscriberPage.body).not.toContain('ai-gateway-nonce')

    const nobodyJson = await get(`${BASE}/admin`)
    expect(nobodyJson.statusCode).toBe(401)
    expect(nobodyJson.json()).toMatchObject({ code: 'ai_unauthorized' })
    const nobodyPage = await get(`${BASE}/admin`, { accept: HTML_ACCEPT })
    expect(nobodyPage.statusCode).toBe(401)
    expectLockedDown(nobodyPage)
    // Back to the page after logging in; a path on this site, never another host.
    expect(nobodyPage.body).toContain(`href="/wp-login.php?redirect_to=${encodeURIComponent(`${BASE}/admin`)}"`)
  })

  it('never opens for a token or an application password, not even an administrator\'s token', async () => {
    for (const headers of [
      await bearer({ sub: 1 }, { nowMs: clock.now() }),
      { authorization: `Basic ${Buffer.from(`${aliceApp.user}:${aliceApp.password}`).toString('base64')}` },
    ]) {
      for (const accept of [undefined, HTML_ACCEPT]) {
        const res = await get(`${BASE}/admin`, { ...headers, ...(accept ? { accept } : {}) })
        expect([401, 403]).toContain(res.statusCode)
        expect(res.body).not.toContain('ai-gateway-nonce')
      }
    }
  })

  it('serves its script and stylesheet itself: public, typed, cached a year under the hashed URL, with an ETag', async () => {
    const scriptUrl = /<script type="module" src="([^"]+)">/.exec(page.body)![1]!
    const styleUrl = /<link rel="stylesheet" href="([^"]+)">/.exec(page.body)![1]!
    for (const [url, type] of [[scriptUrl, 'text/javascript; charset=utf-8'], [styleUrl, 'text/css; charset=utf-8']] as const) {
      expect(url).toMatch(new RegExp(`^${BASE}/admin/assets/app\\.(js|css)\\?v=[A-Za-z0-9_-]{16}$`))
      const res = await get(url)
      expect({ url, status: res.statusCode }).toEqual({ url, status: 200 })
      expect(res.headers['content-type']).toBe(type)
      expect(res.headers['x-content-type-options']).toBe('nosniff')
      expect(res.headers['cache-control']).toBe('public, max-age=31536000, immutable')
      const etag = res.headers.etag as string
      expect(etag).toBe(`"${url.split('?v=')[1]}"`)
      expect(res.body.length).toBeGreaterThan(1000)
      const again = await get(url, { 'if-none-match': etag })
      expect(again.statusCode).toBe(304)
      expect(again.body).toBe('')
      // Without the hash (or with an old one) it is revalidated every time.
      const plain = await get(url.replace(/\?v=.*$/, '?v=old'))
      expect(plain.statusCode).toBe(200)
      expect(plain.headers['cache-control']).toBe('no-cache')
    }
    expect((await get(`${BASE}/admin/assets/other.js`)).statusCode).toBe(404)
  })

  it('references no other host: the page, its script and its stylesheet name no URL but their own', async () => {
    const script = (await get(/src="([^"]+)"/.exec(page.body)![1]!)).body
    const style = (await get(/<link rel="stylesheet" href="([^"]+)">/.exec(page.body)![1]!)).body
    const errorPage = (await get(`${BASE}/admin`, { accept: HTML_ACCEPT })).body
    expect(absoluteUrls(page.body)).toEqual([])
    expect(absoluteUrls(errorPage)).toEqual([])
    expect(absoluteUrls(style)).toEqual([])
    expect(style).not.toMatch(/@import|url\(|@font-face/)
    // The one URL in the script is the SVG namespace, a name that is never fetched.
    expect(absoluteUrls(script)).toEqual(['http://www.w3.org/2000/svg'])
    expect(script).toContain("createElementNS(SVG_NS, tag)")
    // Nothing it loads by itself: every fetch goes through the page's API base.
    expect(script.match(/fetch\(/g)).toHaveLength(1)
    expect(script).toContain('fetch(`${API}${path}`')
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/)
  })
})

describe('the page HTML', () => {
  it('escapes what it embeds: a login or nonce with markup stays text', () => {
    const html = adminPageHtml({
      nonce: '"><script>alert(1)</script>', login: "<img src=x onerror='alert(2)'>", apiBase: '/wp-json/ai/v1', siteBase: '', scriptUrl: '/a.js', styleUrl: '/a.css',
    })
    expect(html).not.toContain('<script>alert(1)')
    expect(html).not.toContain('<img')
    expect(html).toContain('content="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"')
    expect(html).toContain('&lt;img src=x onerror=&#39;alert(2)&#39;&gt;')
    expect(errorPageHtml({ status: 403, code: '<b>x</b>', message: '<i>y</i>', styleUrl: '/a.css' })).not.toMatch(/<b>|<i>/)
    expect(escapeHtml(`&<>"'`)).toBe('&amp;&lt;&gt;&quot;&#39;')
  })
})
