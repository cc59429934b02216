/**
 * The companion plugin's personal-data exporter and eraser, its erasure on user deletion
 * (SPEC §12), and Tools → AI jobs (SPEC §4), run by the real PHP CLI over stubbed WordPress
 * functions. wp_remote_request() is a real HTTP request (PHP streams) to a loopback server that
 * stands in for the gateway; the test checks what arrived (method, path, query, body) and its
 * signature with the gateway's own verifyWebhookSignature and the events secret, and how the
 * plugin turned the answers into WordPress's exporter and eraser results.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { verifyWebhookSignature } from '../../src/webhook/verify-signature.js'
import { callsOf, PHP_MISSING, phpAvailable, runCompanion, type CompanionRun } from '../support/companion-php.js'

// Placeholders: 32 bytes that say what they are.
const EVENTS_SECRET = `whsec_${Buffer.from('placeholder-events-secret-32byte').toString('base64')}`
const OTHER_SECRET = `whsec_${Buffer.from('another-placeholder-secret-32byt').toString('base64')}`
const USERS = { 'alice@example.test': 42 }

interface Received {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: Buffer
}

type Respond = (request: Received) => { status: number; body: unknown }

describe('companion privacy calls to the gateway', () => {
  let server: Server
  let base: string
  let received: Received[] = []
  let respond: Respond = () => ({ status: 500, body: { code: 'unset', message: 'no answer set', data: { status: 500 } } })

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        const request = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) }
        received.push(request)
        const { status, body } = respond(request)
        res.writeHead(status, { 'Content-Type': 'application/json' })
        res.end(JSON.stringify(body))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    await new Promise<void>((resolve, reject) => server?.close((err) => (err ? reject(err) : resolve())))
  })
  beforeEach(() => {
    received = []
  })

  function run(script: string, options: Partial<CompanionRun> = {}) {
    return runCompanion({ constants: { AI_EVENTS_SECRET: EVENTS_SECRET, AI_GATEWAY_URL: base }, users: USERS, ...options, script })
  }

  /** The request is signed the Standard Webhooks way with the events secret, over its exact body. */
  function expectSigned(request: Received) {
    expect(request.headers['webhook-id']).toMatch(/^msg_[0-9a-f]{32}$/)
    expect(request.headers['webhook-timestamp']).toMatch(/^\d+$/)
    expect(request.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+={0,2}$/)
    const check = (secrets: string[]) => verifyWebhookSignature({ rawBody: request.body, headers: request.headers, secrets, nowMs: Date.now() })
    expect(check([EVENTS_SECRET])).toEqual({ ok: true, scheme: 'standard', replayKey: `id:${request.headers['webhook-id']}` })
    expect(check([OTHER_SECRET])).toEqual({ ok: false, reason: 'signature_mismatch' })
  }

  const EXPORT = String.raw`
$exporters = apply_filters('wp_privacy_personal_data_exporters', array());
$out['exporter'] = $exporters['ai-gateway'];
foreach ($cfg['input']['pages'] as $page) {
  $out['pages'][] = ai_test_response(call_user_func($exporters['ai-gateway']['callback'], $cfg['input']['email'], $page));
}
`
  const ERASE = String.raw`
$erasers = apply_filters('wp_privacy_personal_data_erasers', array());
$out['eraser'] = $erasers['ai-gateway'];
$out['result'] = ai_test_response(call_user_func($erasers['ai-gateway']['callback'], $cfg['input']['email'], 1));
`

  const exportJobs = [
    {
      job_id: 7,
      status: 'succeeded',
      model: 'echo',
      created_at: '2026-12-01T10:00:00.000Z',
      updated_at: '2026-12-01T10:00:01.000Z',
      request: { input: 'Summarise my notes', params: { max_tokens: 50 } },
      metadata: { post_id: 12 },
      result: { output: 'Your notes, summarised.' },
      error: null,
      usage: { input_tokens: 4, output_tokens: 4 },
    },
    {
      job_id: 8,
      status: 'failed',
      model: 'gpt-x',
      created_at: '2026-12-02T10:00:00.000Z',
      updated_at: '2026-12-02T10:00:09.000Z',
      request: { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello?' }] },
      metadata: null,
      result: null,
      error: 'provider refused',
      usage: { input_tokens: 0, output_tokens: 0 },
    },
    {
      job_id: 9,
      status: 'succeeded',
      model: 'echo',
      created_at: '2026-12-03T10:00:00.000Z',
      updated_at: '2026-12-03T10:00:00.500Z',
      request: { input: 'Give me JSON' },
      result: { items: [1, 2] },
      error: null,
      usage: {},
    },
  ]

  it('needs the PHP CLI', () => {
    expect(phpAvailable(), PHP_MISSING).toBe(true)
  })

  it('exports page by page: a signed GET to the export route, each job as an exporter item, done from the gateway', async () => {
    respond = (request) => {
      const page = Number(new URL(request.url, base).searchParams.get('page'))
      return { status: 200, body: { user_id: 42, page, per_page: 100, done: page === 2, jobs: page === 1 ? exportJobs.slice(0, 2) : exportJobs.slice(2) } }
    }
    const result = await run(EXPORT, { input: { email: 'alice@example.test', pages: [1, 2] } })

    expect(result.out.exporter).toEqual({ exporter_friendly_name: 'AI jobs', callback: 'ai_gateway_export_personal_data' })
    expect(received.map((r) => [r.method, r.url])).toEqual([
      ['GET', '/wp-json/ai/v1/admin/users/42/export?page=1&per_page=100'],
      ['GET', '/wp-json/ai/v1/admin/users/42/export?page=2&per_page=100'],
    ])
    for (const request of received) {
      expect(request.body.length).toBe(0)
      expect(request.headers.accept).toBe('application/json')
      expectSigned(request)
    }
    // Each request has its own id.
    expect(new Set(received.map((r) => r.headers['webhook-id'])).size).toBe(2)

    const [page1, page2] = result.out.pages as Array<{ value: { data: unknown[]; done: boolean } }>
    expect(page1!.value.done).toBe(false)
    expect(page2!.value.done).toBe(true)
    const group = { group_id: 'ai-gateway-jobs', group_label: 'AI jobs', group_description: expect.any(String) }
    expect(page1!.value.data).toEqual([
      {
        ...group,
        item_id: 'ai-job-7',
        data: [
          { name: 'Created', value: '2026-12-01T10:00:00.000Z' },
          { name: 'Status', value: 'succeeded' },
          { name: 'Model', value: 'echo' },
          { name: 'Prompt', value: 'Summarise my notes' },
          { name: 'Result', value: 'Your notes, summarised.' },
          { name: 'Metadata', value: '{"post_id":12}' },
        ],
      },
      {
        ...group,
        item_id: 'ai-job-8',
        data: [
          { name: 'Created', value: '2026-12-02T10:00:00.000Z' },
          { name: 'Status', value: 'failed' },
          { name: 'Model', value: 'gpt-x' },
          { name: 'Prompt', value: 'system: Be brief.\n\nuser: Hello?' },
          { name: 'Error', value: 'provider refused' },
        ],
      },
    ])
    // A result without a string `output` is exported as its JSON.
    expect(page2!.value.data).toEqual([expect.objectContaining({ item_id: 'ai-job-9', data: expect.arrayContaining([{ name: 'Result', value: '{"items":[1,2]}' }]) })])
  })

  it('returns nothing, and asks nothing, for an e-mail that is no user', async () => {
    const exported = await run(EXPORT, { input: { email: 'nobody@example.test', pages: [1] } })
    expect(exported.out.pages).toEqual([{ value: { data: [], done: true } }])
    const erased = await run(ERASE, { input: { email: 'nobody@example.test' } })
    expect(erased.out.result).toEqual({ value: { items_removed: false, items_retained: false, messages: [], done: true } })
    expect(received).toEqual([])
  })

  it('ends an export on a page without jobs, even when the gateway says it is not done', async () => {
    respond = () => ({ status: 200, body: { user_id: 42, page: 3, per_page: 100, done: false, jobs: [] } })
    const result = await run(EXPORT, { input: { email: 'alice@example.test', pages: [3] } })
    expect(result.out.pages).toEqual([{ value: { data: [], done: true } }])
  })

  it('erases with a signed POST of {} and reports what the gateway removed', async () => {
    respond = () => ({ status: 200, body: { user_id: 42, jobs_erased: 3, results_erased: 1, archive_lines_erased: 5, done: true } })
    const result = await run(ERASE, { input: { email: 'alice@example.test' } })

    expect(result.out.eraser).toEqual({ eraser_friendly_name: 'AI jobs', callback: 'ai_gateway_erase_personal_data' })
    expect(received).toHaveLength(1)
    const [request] = received as [Received]
    expect([request.method, request.url, request.body.toString('utf8')]).toEqual(['POST', '/wp-json/ai/v1/admin/users/42/erase', '{}'])
    expect(request.headers['content-type']).toBe('application/json')
    expectSigned(request)
    expect(result.out.result).toEqual({
      value: { items_removed: true, items_retained: false, messages: ['AI gateway: 3 jobs, 1 stored results and 5 archived jobs erased.'], done: true },
    })

    respond = () => ({ status: 200, body: { user_id: 42, jobs_erased: 0, results_erased: 0, archive_lines_erased: 0, done: true } })
    const nothing = await run(ERASE, { input: { email: 'alice@example.test' } })
    expect(nothing.out.result).toEqual({ value: { items_removed: false, items_retained: false, messages: [], done: true } })
  })

  it('hands the admin a WP_Error when the gateway refuses or cannot be reached', async () => {
    respond = () => ({ status: 403, body: { code: 'ai_forbidden', message: 'signature refused', data: { status: 403 } } })
    const refusedExport = await run(EXPORT, { input: { email: 'alice@example.test', pages: [1] } })
    expect(refusedExport.out.pages).toEqual([{ error: 'ai_gateway_request_failed', message: 'The AI gateway answered 403: signature refused', data: { status: 403 } }])
    const refusedErase = await run(ERASE, { input: { email: 'alice@example.test' } })
    expect(refusedErase.out.result).toMatchObject({ error: 'ai_gateway_request_failed', data: { status: 403 } })

    // A port nothing listens on: a transport error.
    const closed = createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const deadPort = (closed.address() as AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const unreachable = await run(ERASE, { input: { email: 'alice@example.test' }, constants: { AI_EVENTS_SECRET: EVENTS_SECRET, AI_GATEWAY_URL: `http://127.0.0.1:${deadPort}` } })
    expect(unreachable.out.result).toMatchObject({ error: 'ai_gateway_unreachable', message: expect.stringContaining('could not be reached') })

    // Without the secret nothing is sent.
    const unsigned = await run(EXPORT, { input: { email: 'alice@example.test', pages: [1] }, constants: { AI_GATEWAY_URL: base } })
    expect(unsigned.out.pages).toEqual([{ error: 'ai_gateway_not_configured', message: expect.stringContaining('AI_EVENTS_SECRET'), data: '' }])
    expect(received).toHaveLength(2)
  })

  it('without AI_GATEWAY_URL, calls the rest_url() address (pretty and plain permalinks); with a path, keeps it', async () => {
    respond = () => ({ status: 200, body: { user_id: 42, page: 1, per_page: 100, done: true, jobs: [] } })
    const input = { email: 'alice@example.test', pages: [1] }
    const constants = { AI_EVENTS_SECRET: EVENTS_SECRET }
    await run(EXPORT, { input, constants, restUrl: `${base}/wp-json/` })
    await run(EXPORT, { input, constants, restUrl: `${base}/?rest_route=/` })
    await run(EXPORT, { input, constants: { ...constants, AI_GATEWAY_URL: `${base}/blog/` } })
    await run(EXPORT, { input, constants, env: { AI_GATEWAY_URL: base } })
    expect(received.map((r) => r.url)).toEqual([
      '/wp-json/ai/v1/admin/users/42/export?page=1&per_page=100',
      '/?rest_route=/ai/v1/admin/users/42/export&page=1&per_page=100',
      '/blog/wp-json/ai/v1/admin/users/42/export?page=1&per_page=100',
      '/wp-json/ai/v1/admin/users/42/export?page=1&per_page=100',
    ])
    for (const request of received) expectSigned(request)
  })

  it('erases a deleted user on delete_user (on a multisite, on wpmu_delete_user only)', async () => {
    respond = () => ({ status: 200, body: { user_id: 42, jobs_erased: 1, results_erased: 0, archive_lines_erased: 0, done: true } })
    const single = await run("do_action('delete_user', 42, null);")
    expect(received.map((r) => [r.method, r.url])).toEqual([['POST', '/wp-json/ai/v1/admin/users/42/erase']])
    expectSigned(received[0]!)
    expect(single.errorLog).toEqual([])
    expect(callsOf(single, 'wp_schedule_single_event')).toEqual([])

    received = []
    // Removing a user from one site of a network keeps the account, and its jobs.
    await run("do_action('delete_user', 42, null);", { multisite: true })
    expect(received).toEqual([])
    await run("do_action('wpmu_delete_user', 42);", { multisite: true })
    expect(received.map((r) => r.url)).toEqual(['/wp-json/ai/v1/admin/users/42/erase'])
  })

  it('calls erase again while the gateway says it is not done', async () => {
    let calls = 0
    respond = () => ({ status: 200, body: { user_id: 42, jobs_erased: 100, results_erased: 0, archive_lines_erased: 0, done: ++calls === 3 } })
    const result = await run("do_action('delete_user', 42, null);")
    expect(received).toHaveLength(3)
    expect(result.errorLog).toEqual([])
  })

  it('logs a failed erase on delete_user and schedules one wp-cron retry, which does not schedule another', async () => {
    respond = () => ({ status: 503, body: { code: 'ai_unavailable', message: 'database down', data: { status: 503 } } })
    const failed = await run("do_action('delete_user', 42, null);")
    expect(received).toHaveLength(1)
    expect(failed.errorLog.join('\n')).toMatch(/erasing the AI jobs of deleted user 42 failed: The AI gateway answered 503: database down; one retry is scheduled/)
    const [[when, hook, args]] = callsOf(failed, 'wp_schedule_single_event') as [[number, string, unknown[]]]
    expect([hook, args]).toEqual(['ai_gateway_erase_user_retry', [42]])
    expect(when).toBeGreaterThan(Date.now() / 1000)

    // wp-cron runs the retry with the scheduled arguments.
    const retried = await run("do_action('ai_gateway_erase_user_retry', 42);")
    expect(received).toHaveLength(2)
    expect(retried.errorLog.join('\n')).toMatch(/deleted user 42 failed: The AI gateway answered 503: database down$/)
    expect(callsOf(retried, 'wp_schedule_single_event')).toEqual([])

    respond = () => ({ status: 200, body: { user_id: 42, jobs_erased: 1, results_erased: 0, archive_lines_erased: 0, done: true } })
    const recovered = await run("do_action('ai_gateway_erase_user_retry', 42);")
    expect(recovered.errorLog).toEqual([])
  })
})

describe('companion admin menu', () => {
  const MENU = String.raw`
do_action('admin_menu');
$pages = ai_test_calls('add_management_page');
$out['page'] = $pages[0];
ob_start();
call_user_func($pages[0][4]);
$out['html'] = ob_get_clean();
do_action('load-tools_page_ai-gateway-jobs');
$out['after_redirect'] = true;
`

  it('adds Tools → AI jobs for manage_options, which sends the browser to the gateway page', async () => {
    const result = await runCompanion({ script: MENU })
    expect(result.hooks).toContainEqual(['action', 'admin_menu', 'ai_gateway_register_admin_menu', 10, 1])
    expect(result.out.page).toEqual(['AI jobs', 'AI jobs', 'manage_options', 'ai-gateway-jobs', 'ai_gateway_render_admin_link'])
    expect(callsOf(result, 'wp_safe_redirect')).toEqual([['http://example.test/wp-json/ai/v1/admin', 302]])
    // The redirect ends the request, as WordPress requires after wp_safe_redirect().
    expect(result.out.after_redirect).toBeUndefined()
    expect(result.out.html).toContain('href="http://example.test/wp-json/ai/v1/admin"')
  })

  it('links to the plain-permalink form, and renders the link when the redirect did not happen', async () => {
    const result = await runCompanion({ script: MENU, restUrl: 'http://example.test/?rest_route=/', redirectWorks: false })
    expect(callsOf(result, 'wp_safe_redirect')).toEqual([['http://example.test/?rest_route=/ai/v1/admin', 302]])
    expect(result.out.after_redirect).toBe(true)
    expect(result.out.html).toContain('href="http://example.test/?rest_route=/ai/v1/admin"')
  })

  it('takes the capability from AI_ADMIN_CAPABILITY first, then the filter', async () => {
    const filtered = await runCompanion({ script: MENU, filters: { ai_gateway_admin_capability: 'edit_others_posts' } })
    expect((filtered.out.page as unknown[])[2]).toBe('edit_others_posts')
    const defined = await runCompanion({ script: MENU, constants: { AI_ADMIN_CAPABILITY: 'ai_admin' }, filters: { ai_gateway_admin_capability: 'edit_others_posts' } })
    expect((defined.out.page as unknown[])[2]).toBe('ai_admin')
    const fromEnv = await runCompanion({ script: MENU, env: { AI_ADMIN_CAPABILITY: 'ai_admin_env' } })
    expect((fromEnv.out.page as unknown[])[2]).toBe('ai_admin_env')
  })
})
