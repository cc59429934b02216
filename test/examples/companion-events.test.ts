/**
 * The companion plugin's events endpoint, `POST /wp-json/ai-gateway/v1/events` (SPEC §10), run by
 * the real PHP CLI over stubbed WordPress functions: deliveries signed by the gateway's own
 * signer (signStandardWebhook) are accepted and fire `ai_gateway_job_finished` once per
 * webhook-id; anything else is refused and fires nothing. Also the example hook that writes the
 * excerpt (examples/wordpress/examples/excerpt-hook.php) and the block-editor button that
 * creates its job (excerpt-button.js).
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createContext, runInContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { signStandardWebhook } from '../../src/webhook/verify-signature.js'
import { callsOf, COMPANION_DIR, PHP_MISSING, phpAvailable, runCompanion, type CompanionRun } from '../support/companion-php.js'

// Placeholders: 32 bytes that say what they are.
const EVENTS_SECRET = `whsec_${Buffer.from('placeholder-events-secret-32byte').toString('base64')}`
const OTHER_SECRET = `whsec_${Buffer.from('another-placeholder-secret-32byt').toString('base64')}`
const EXCERPT_HOOK = join(COMPANION_DIR, 'examples/excerpt-hook.php')
const EXCERPT_BUTTON = join(COMPANION_DIR, 'examples/excerpt-button.js')
const SEEN_PREFIX = 'ai_gateway_event_'

interface Delivery {
  headers: Record<string, string>
  body: string
}

interface Answer {
  status?: number
  data?: unknown
  error?: string
  message?: string
}

const nowSeconds = () => Math.floor(Date.now() / 1000)

function job(overrides: Record<string, unknown> = {}) {
  return {
    job_id: 7,
    status: 'succeeded',
    model: 'echo',
    created_at: '2026-12-01T10:00:00.000Z',
    updated_at: '2026-12-01T10:00:01.250Z',
    attempts: 1,
    result: { output: 'A short excerpt.' },
    error: null,
    usage: { input_tokens: 12, output_tokens: 4, provider_ms: 3, worker_ms: 5 },
    request_id: 'req-1',
    ...overrides,
  }
}

function eventBody(overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({ type: 'job.succeeded', user_id: 5, owner_key: 'u:5', job: job(), metadata: { post_id: 12, purpose: 'excerpt' }, ...overrides })
}

/** A delivery as the gateway sends it: signed with `secret`, timestamped `timestampSeconds`. */
function delivery(options: { id?: string; body?: string; secret?: string; timestampSeconds?: number } = {}): Delivery {
  const body = options.body ?? eventBody()
  const headers = signStandardWebhook({
    secret: options.secret ?? EVENTS_SECRET,
    id: options.id ?? 'msg_2pYbGqTz9x8e',
    timestampSeconds: options.timestampSeconds ?? nowSeconds(),
    body,
  })
  return { headers: { ...headers }, body }
}

/**
 * Registers the route (rest_api_init), then sends each delivery to its callback the way
 * WordPress's REST server would, with a listener on ai_gateway_job_finished that records what it
 * got (and throws when the input says so).
 */
const DELIVER = String.raw`
do_action('rest_api_init');
$route = $GLOBALS['routes']['ai-gateway/v1/events'];
$out['permission'] = call_user_func($route['permission_callback'], new WP_REST_Request('POST', '/ai-gateway/v1/events'));
$out['finished'] = array();
add_action('ai_gateway_job_finished', function ($job, $metadata, $type) {
  $GLOBALS['out']['finished'][] = array('job' => $job, 'metadata' => $metadata, 'type' => $type);
  if (!empty($GLOBALS['cfg']['input']['throw'])) { throw new RuntimeException('the handler broke'); }
}, 10, 3);
$out['answers'] = array();
foreach ($cfg['input']['deliveries'] as $d) {
  $request = new WP_REST_Request('POST', '/ai-gateway/v1/events');
  foreach ($d['headers'] as $name => $value) { $request->set_header($name, $value); }
  $request->set_body($d['body']);
  $out['answers'][] = ai_test_response(call_user_func($route['callback'], $request));
}
`

async function deliver(deliveries: Delivery[], run: Partial<CompanionRun> & { throws?: boolean } = {}) {
  const { throws, ...rest } = run
  const result = await runCompanion({
    constants: { AI_EVENTS_SECRET: EVENTS_SECRET },
    ...rest,
    script: DELIVER,
    input: { deliveries, throw: throws ?? false },
  })
  return {
    result,
    answers: result.out.answers as Answer[],
    finished: result.out.finished as Array<{ job: Record<string, unknown>; metadata: unknown; type: string }>,
    seen: Object.keys(result.options).filter((name) => name.startsWith(SEEN_PREFIX)),
  }
}

const seenName = (id: string) => SEEN_PREFIX + createHash('sha256').update(id).digest('hex')

describe('companion events endpoint', () => {
  it('needs the PHP CLI', () => {
    expect(phpAvailable(), PHP_MISSING).toBe(true)
  })

  it('registers POST ai-gateway/v1/events, open to all callers because the signature authenticates', async () => {
    const { result } = await deliver([])
    expect(callsOf(result, 'register_rest_route')).toEqual([
      ['ai-gateway/v1', '/events', { methods: 'POST', callback: 'ai_gateway_receive_event', permission_callback: 'ai_gateway_events_permission' }],
    ])
    expect(result.out.permission).toBe(true)
    expect(result.hooks).toContainEqual(['action', 'rest_api_init', 'ai_gateway_register_event_route', 10, 1])
  })

  it('accepts a delivery signed by the gateway, fires the action with the job (with user_id), metadata and type, and records the id', async () => {
    const { answers, finished, seen, result } = await deliver([delivery({ id: 'msg_first' })])
    expect(answers).toEqual([{ status: 200, data: { received: true } }])
    expect(finished).toEqual([{ job: { ...job(), user_id: 5, owner_key: 'u:5' }, metadata: { post_id: 12, purpose: 'excerpt' }, type: 'job.succeeded' }])
    // Recorded after the action, durably: an option with autoload off.
    expect(seen).toEqual([seenName('msg_first')])
    expect(result.options[seenName('msg_first')]!.autoload).toBe(false)
    expect(Number(result.options[seenName('msg_first')]!.value)).toBeCloseTo(nowSeconds(), -1)
  })

  it('keeps a user_id the job JSON already has, and passes null metadata and the other types through', async () => {
    const failed = eventBody({ type: 'job.failed', user_id: 5, job: job({ status: 'failed', result: null, error: 'provider said no', user_id: 5 }), metadata: null })
    const canceled = eventBody({ type: 'job.canceled', user_id: 0, owner_key: 's:visitor0123456789abcdef', job: job({ status: 'canceled', result: null }) })
    const { answers, finished } = await deliver([delivery({ id: 'msg_a', body: failed }), delivery({ id: 'msg_b', body: canceled })])
    expect(answers.map((a) => a.status)).toEqual([200, 200])
    expect(finished.map((f) => [f.type, f.job.user_id, f.job.status, f.metadata])).toEqual([
      ['job.failed', 5, 'failed', null],
      ['job.canceled', 0, 'canceled', { post_id: 12, purpose: 'excerpt' }],
    ])
    expect(finished[1]!.job.owner_key).toBe('s:visitor0123456789abcdef')
  })

  it('acknowledges the same webhook-id again without firing, in the same process and after a restart', async () => {
    // The gateway's retry: same id, fresh timestamp and signature.
    const first = await deliver([delivery({ id: 'msg_retry', timestampSeconds: nowSeconds() - 5 }), delivery({ id: 'msg_retry' })])
    expect(first.answers.map((a) => a.status)).toEqual([200, 200])
    expect(first.answers[1]!.data).toMatchObject({ received: true, duplicate: true })
    expect(first.finished).toHaveLength(1)
    expect(first.seen).toEqual([seenName('msg_retry')])

    // Another PHP process (another request) reading the same options table.
    const later = await deliver([delivery({ id: 'msg_retry' }), delivery({ id: 'msg_other' })], { options: first.result.options })
    expect(later.answers.map((a) => a.status)).toEqual([200, 200])
    expect(later.finished.map((f) => f.job.job_id)).toEqual([7])
    expect(later.seen.sort()).toEqual([seenName('msg_retry'), seenName('msg_other')].sort())
  })

  it('accepts a header with several signatures when one of them is right (a rotation)', async () => {
    const good = delivery({ id: 'msg_multi' })
    const other = delivery({ id: 'msg_multi', secret: OTHER_SECRET, body: good.body, timestampSeconds: Number(good.headers['webhook-timestamp']) })
    const header = `${other.headers['webhook-signature']} v1a,bm90IGEgc2lnbmF0dXJl ${good.headers['webhook-signature']}`
    const { answers, finished } = await deliver([{ ...good, headers: { ...good.headers, 'webhook-signature': header } }])
    expect(answers).toEqual([{ status: 200, data: { received: true } }])
    expect(finished).toHaveLength(1)
  })

  it('refuses, with the right code and status and without firing or recording, every delivery that is not right', async () => {
    const good = delivery({ id: 'msg_bad' })
    const cases: Array<[string, Delivery, string, number]> = [
      ['a body changed after signing', { ...good, body: good.body.replace('A short excerpt.', 'Something else.') }, 'ai_gateway_invalid_signature', 401],
      ['a signature by another secret', delivery({ id: 'msg_bad', secret: OTHER_SECRET }), 'ai_gateway_invalid_signature', 401],
      ['a garbled signature', { ...good, headers: { ...good.headers, 'webhook-signature': 'v1,not-base64!' } }, 'ai_gateway_invalid_signature', 401],
      ['a changed id', { ...good, headers: { ...good.headers, 'webhook-id': 'msg_other' } }, 'ai_gateway_invalid_signature', 401],
      ['no signature headers', { headers: {}, body: good.body }, 'ai_gateway_invalid_signature', 401],
      ['a stale timestamp', delivery({ id: 'msg_bad', timestampSeconds: nowSeconds() - 301 - 5 }), 'ai_gateway_stale_event', 401],
      ['a timestamp in the future', delivery({ id: 'msg_bad', timestampSeconds: nowSeconds() + 400 }), 'ai_gateway_stale_event', 401],
      ['a body that is not JSON', delivery({ id: 'msg_bad', body: 'not json' }), 'ai_gateway_invalid_event', 400],
      ['an unknown type', delivery({ id: 'msg_bad', body: eventBody({ type: 'job.started' }) }), 'ai_gateway_invalid_event', 400],
      ['a user_id that is not an integer', delivery({ id: 'msg_bad', body: eventBody({ user_id: '5' }) }), 'ai_gateway_invalid_event', 400],
      ['no job', delivery({ id: 'msg_bad', body: eventBody({ job: 'x' }) }), 'ai_gateway_invalid_event', 400],
      ['metadata that is not an object', delivery({ id: 'msg_bad', body: eventBody({ metadata: 'post 12' }) }), 'ai_gateway_invalid_event', 400],
    ]
    const { answers, finished, seen } = await deliver(cases.map(([, d]) => d))
    expect(answers.map((a, i) => [cases[i]![0], a.error, (a.data as { status: number }).status])).toEqual(cases.map(([what, , code, status]) => [what, code, status]))
    expect(finished).toEqual([])
    expect(seen).toEqual([])
  })

  it('accepts 300 s of clock difference, either way', async () => {
    const { answers } = await deliver([
      delivery({ id: 'msg_early', timestampSeconds: nowSeconds() + 290 }),
      delivery({ id: 'msg_late', timestampSeconds: nowSeconds() - 290 }),
    ])
    expect(answers.map((a) => a.status)).toEqual([200, 200])
  })

  it('answers 503 ai_gateway_events_disabled without a secret (or with a broken one), and reads the secret from the environment', async () => {
    const none = await deliver([delivery()], { constants: {} })
    expect(none.answers).toEqual([{ error: 'ai_gateway_events_disabled', message: expect.stringContaining('AI_EVENTS_SECRET'), data: { status: 503 } }])
    expect(none.finished).toEqual([])

    const broken = await deliver([delivery()], { constants: { AI_EVENTS_SECRET: 'whsec_***' } })
    expect(broken.answers[0]).toMatchObject({ error: 'ai_gateway_events_disabled', data: { status: 503 } })

    const fromEnv = await deliver([delivery()], { constants: {}, env: { AI_EVENTS_SECRET: EVENTS_SECRET } })
    expect(fromEnv.answers[0]).toEqual({ status: 200, data: { received: true } })
    expect(fromEnv.finished).toHaveLength(1)
  })

  it('accepts a secret without the whsec_ prefix as its raw bytes, as the gateway signs with it', async () => {
    const raw = 'placeholder-raw-events-secret'
    const { answers } = await deliver([delivery({ secret: raw })], { constants: { AI_EVENTS_SECRET: raw } })
    expect(answers[0]).toEqual({ status: 200, data: { received: true } })
  })

  it('answers 500 and records nothing when the action throws, so the retry fires it again', async () => {
    const broken = await deliver([delivery({ id: 'msg_throws' })], { throws: true })
    expect(broken.answers).toEqual([{ error: 'ai_gateway_event_failed', message: expect.any(String), data: { status: 500 } }])
    expect(broken.finished).toHaveLength(1)
    expect(broken.seen).toEqual([])
    expect(broken.result.errorLog.join('\n')).toMatch(/ai_gateway_job_finished failed on event msg_throws \(job 7\): the handler broke/)

    const retried = await deliver([delivery({ id: 'msg_throws' })], { options: broken.result.options })
    expect(retried.answers[0]).toEqual({ status: 200, data: { received: true } })
    expect(retried.finished).toHaveLength(1)
    expect(retried.seen).toEqual([seenName('msg_throws')])
  })
})

describe('companion seen-id cleanup', () => {
  const CLEANUP = String.raw`
do_action('init');
do_action('ai_gateway_cleanup_events');
`
  it('schedules a daily wp-cron cleanup once', async () => {
    const fresh = await runCompanion({ script: "do_action('init');" })
    expect(callsOf(fresh, 'wp_schedule_event')).toEqual([[expect.any(Number), 'daily', 'ai_gateway_cleanup_events', []]])
    expect(fresh.hooks).toContainEqual(['action', 'ai_gateway_cleanup_events', 'ai_gateway_cleanup_seen_events', 10, 1])
    const already = await runCompanion({ script: "do_action('init');", scheduled: ['ai_gateway_cleanup_events'] })
    expect(callsOf(already, 'wp_schedule_event')).toEqual([])
  })

  it('deletes the ids seen more than 48 h ago, and nothing else', async () => {
    const now = nowSeconds()
    const options = {
      [seenName('old')]: { value: String(now - 49 * 3600), autoload: false },
      [seenName('recent')]: { value: String(now - 47 * 3600), autoload: false },
      // Another plugin's option whose name only looks alike must survive (the LIKE is escaped).
      ai_gatewayXevent_kept: { value: '1', autoload: true },
      blogname: { value: 'Example', autoload: true },
    }
    const result = await runCompanion({ script: CLEANUP, options, scheduled: ['ai_gateway_cleanup_events'] })
    expect(Object.keys(result.options).sort()).toEqual([seenName('recent'), 'ai_gatewayXevent_kept', 'blogname'].sort())
    expect(callsOf(result, 'delete_option')).toEqual([[seenName('old')]])
    const [sql] = callsOf(result, 'wpdb::get_col')[0] as [string]
    expect(sql).toContain(String.raw`LIKE 'ai\\_gateway\\_event\\_%'`)
  })
})

describe('the excerpt example', () => {
  const post = (overrides: Record<string, unknown> = {}) => eventBody({ user_id: 5, ...overrides })

  async function deliverToExample(body: string, run: Partial<CompanionRun> = {}) {
    const out = await deliver([delivery({ id: `msg_${Math.random().toString(36).slice(2)}`, body })], { require: [EXCERPT_HOOK], ...run })
    return { ...out, updates: callsOf(out.result, 'wp_update_post'), checks: callsOf(out.result, 'user_can') }
  }

  it('writes the result into the excerpt when the job user may edit the post', async () => {
    const { answers, updates, checks } = await deliverToExample(post({ job: job({ result: { output: '<b>A short</b> excerpt. ' } }) }), { grants: ['5:edit_post:12'] })
    expect(answers[0]).toEqual({ status: 200, data: { received: true } })
    expect(checks).toEqual([[5, 'edit_post', 12]])
    expect(updates).toEqual([[{ ID: 12, post_excerpt: 'A short excerpt.' }, true]])
  })

  it('writes nothing when user_can says no, for a visitor, for another purpose or for a job that did not succeed', async () => {
    const cases: Array<[string, string]> = [
      ['another user', post({ user_id: 6, job: job() })],
      ['a visitor', post({ user_id: 0, owner_key: 's:visitor0123456789abcdef' })],
      ['another purpose', post({ metadata: { post_id: 12, purpose: 'alt-text' } })],
      ['no metadata', post({ metadata: null })],
      ['a failed job', post({ type: 'job.failed', job: job({ status: 'failed', result: null, error: 'no' }) })],
    ]
    for (const [what, body] of cases) {
      const { answers, updates } = await deliverToExample(body, { grants: ['5:edit_post:12'] })
      expect([what, answers[0]!.status, updates]).toEqual([what, 200, []])
    }
    // And the check itself decides: the same event without the grant writes nothing.
    const refused = await deliverToExample(post(), { grants: [] })
    expect(refused.checks).toEqual([[5, 'edit_post', 12]])
    expect(refused.updates).toEqual([])
  })

  it('answers 500 when the post cannot be saved, so the gateway sends the event again', async () => {
    const { answers, seen, updates } = await deliverToExample(post(), { grants: ['5:edit_post:12'], updatePostFails: true })
    expect(updates).toHaveLength(1)
    expect(answers[0]).toMatchObject({ error: 'ai_gateway_event_failed', data: { status: 500 } })
    expect(seen).toEqual([])
  })

  it('enqueues the button in the block editor', async () => {
    const result = await runCompanion({ script: "do_action('enqueue_block_editor_assets');", require: [EXCERPT_HOOK] })
    const [handle, src, deps] = callsOf(result, 'wp_enqueue_script')[0] as [string, string, string[]]
    expect(handle).toBe('my-theme-ai-excerpt')
    expect(src).toMatch(/excerpt-button\.js$/)
    expect(deps).toEqual(expect.arrayContaining(['wp-plugins', 'wp-editor', 'wp-element', 'wp-components', 'wp-data', 'wp-api-fetch']))
  })

  it('the button creates a job with the post text and { post_id, purpose } and waits for it to end', async () => {
    type Element = { type: unknown; props: Record<string, unknown>; children: unknown[] }
    const fetches: Array<Record<string, unknown>> = []
    let state: unknown
    let registered: { name: string; render: () => Element } | undefined
    const PluginDocumentSettingPanel = () => null
    const Button = () => null
    const wp = {
      element: {
        createElement: (type: unknown, props: Record<string, unknown> | null, ...children: unknown[]): Element => ({ type, props: props ?? {}, children }),
        useState: (initial: unknown) => {
          state ??= initial
          return [state, (next: unknown) => (state = next)]
        },
      },
      data: {
        useSelect: (select: (store: (name: string) => unknown) => unknown) =>
          select((name) => {
            expect(name).toBe('core/editor')
            return { getCurrentPostId: () => 12, getEditedPostAttribute: (key: string) => (key === 'title' ? 'Hello' : ''), getEditedPostContent: () => '<!-- wp:paragraph --><p>Some <em>post</em> text.</p><!-- /wp:paragraph -->' }
          }),
      },
      components: { Button },
      editor: { PluginDocumentSettingPanel },
      plugins: { registerPlugin: (name: string, settings: { render: () => Element }) => (registered = { name, ...settings }) },
      apiFetch: async (options: Record<string, unknown>) => {
        fetches.push(options)
        if (options.method === 'POST') return { job_id: 41, status: 'pending', request_id: 'r' }
        return { job_id: 41, status: fetches.length < 3 ? 'running' : 'succeeded' }
      },
    }
    // A DOMParser that keeps only the text, as the browser's would.
    class DOMParser {
      parseFromString(html: string) {
        return { body: { textContent: html.replace(/<[^>]*>/g, '') } }
      }
    }
    const context = createContext({ window: { wp }, DOMParser, setTimeout: (fn: () => void) => setImmediate(fn) })
    runInContext(readFileSync(EXCERPT_BUTTON, 'utf8'), context, { filename: 'excerpt-button.js' })

    expect(registered?.name).toBe('my-theme-ai-excerpt')
    const panel = registered!.render()
    expect(panel.type).toBe(PluginDocumentSettingPanel)
    const button = panel.children.find((c): c is Element => (c as Element | null)?.type === Button)!
    await (button.props.onClick as () => Promise<void>)()

    expect(fetches[0]).toEqual({
      path: '/ai/v1/jobs',
      method: 'POST',
      data: { input: expect.stringContaining('Title: Hello\n\nSome post text.'), metadata: { post_id: 12, purpose: 'excerpt' } },
    })
    expect(fetches.slice(1).map((f) => f.path)).toEqual(['/ai/v1/jobs/41', '/ai/v1/jobs/41'])
    expect(state).toEqual({ busy: false, message: expect.stringContaining('excerpt is saved') })
  })
})
