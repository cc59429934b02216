/**
 * The WordPress companion mu-plugin (examples/wordpress/ai-gateway-companion.php): its tokens must
 * be ones the gateway accepts. The plugin is run by the real PHP CLI, with stubs for the few
 * WordPress functions it calls, and its tokens are checked with src/auth/public-token.ts.
 *
 * PHP is required: without `php` on PATH these tests fail (CI installs php-cli).
 */
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { verifyPublicToken } from '../../src/auth/public-token.js'
import { TOKEN_SECRET } from '../helpers.js'

const PLUGIN = fileURLToPath(new URL('../../examples/wordpress/ai-gateway-companion.php', import.meta.url))
const source = readFileSync(PLUGIN, 'utf8')
const secret = new TextEncoder().encode(TOKEN_SECRET)
const NOW = 1_795_914_158

const PHP_MISSING = 'php (the PHP CLI) is not installed, but the companion plugin tests run it: install it with `apt-get install -y php-cli` (CI: add it to .ci/run).'

function phpAvailable(): boolean {
  const r = spawnSync('php', ['-v'], { encoding: 'utf8' })
  return r.status === 0 && /^PHP \d/.test(r.stdout)
}

/**
 * Loads the plugin in `php -r` with stubbed WordPress functions, then calls into it. The stubs
 * record hooks and script registrations; `filters` overrides apply_filters() values.
 */
const HARNESS = String.raw`
$cfg = json_decode(getenv('AIGW_TEST'), true);
define('ABSPATH', '/');
if (array_key_exists('constant', $cfg)) { define('AI_PUBLIC_TOKEN_SECRET', $cfg['constant']); }
if (isset($cfg['cookie'])) { $_COOKIE['ai_gateway_sid'] = $cfg['cookie']; }
$hooks = array();
$calls = array();
function add_action($hook, $cb, $priority = 10) { $GLOBALS['hooks'][] = array('action', $hook, $cb); return true; }
function add_filter($hook, $cb, $priority = 10) { $GLOBALS['hooks'][] = array('filter', $hook, $cb); return true; }
function apply_filters($hook, $value) { return array_key_exists($hook, $GLOBALS['cfg']['filters']) ? $GLOBALS['cfg']['filters'][$hook] : $value; }
function get_current_user_id() { return $GLOBALS['cfg']['user_id']; }
function is_user_logged_in() { return $GLOBALS['cfg']['user_id'] > 0; }
function is_ssl() { return $GLOBALS['cfg']['ssl']; }
function wp_create_nonce($action) { return 'nonce:' . $action . ':' . $GLOBALS['cfg']['user_id']; }
function rest_url() { return $GLOBALS['cfg']['rest_url']; }
function esc_url_raw($url) { return $url; }
function wp_json_encode($value) { return json_encode($value); }
function wp_register_script() { $GLOBALS['calls'][] = array('wp_register_script', func_get_args()); return true; }
function wp_add_inline_script() { $GLOBALS['calls'][] = array('wp_add_inline_script', func_get_args()); return true; }
function wp_localize_script() { $GLOBALS['calls'][] = array('wp_localize_script', func_get_args()); return true; }
require $cfg['plugin'];
$out = array('token' => ai_gateway_issue_token($cfg['now']));
$out['cookie'] = isset($_COOKIE['ai_gateway_sid']) ? $_COOKIE['ai_gateway_sid'] : null;
$out['cookie_options'] = ai_gateway_sid_cookie_options(1000);
$out['hooks'] = $hooks;
if (!empty($cfg['register'])) { ai_gateway_register_script(); $out['calls'] = $calls; }
$out['uncacheable_before'] = defined('DONOTCACHEPAGE');
ai_gateway_mark_uncacheable(array('jquery'));
$out['uncacheable_other'] = defined('DONOTCACHEPAGE');
ai_gateway_mark_uncacheable(array('jquery', 'ai-gateway'));
$out['uncacheable_after'] = defined('DONOTCACHEPAGE');
echo json_encode($out);
`

interface HarnessOptions {
  userId?: number
  constant?: string
  env?: Record<string, string>
  cookie?: string
  ssl?: boolean
  filters?: Record<string, unknown>
  register?: boolean
  now?: number
}

interface HarnessResult {
  token: { token: string; expires_at: number } | null
  cookie: string | null
  cookie_options: Record<string, unknown>
  hooks: Array<[string, string, string]>
  calls?: Array<[string, unknown[]]>
  uncacheable_before: boolean
  uncacheable_other: boolean
  uncacheable_after: boolean
}

function runPlugin(options: HarnessOptions = {}): HarnessResult {
  if (!phpAvailable()) throw new Error(PHP_MISSING)
  const cfg: Record<string, unknown> = {
    plugin: PLUGIN,
    user_id: options.userId ?? 0,
    ssl: options.ssl ?? false,
    filters: options.filters ?? {},
    register: options.register ?? false,
    now: options.now ?? NOW,
    rest_url: 'http://example.test/wp-json/',
  }
  if (!options.env) cfg.constant = options.constant ?? TOKEN_SECRET
  if (options.cookie !== undefined) cfg.cookie = options.cookie
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', AIGW_TEST: JSON.stringify(cfg), ...options.env }
  const r = spawnSync('php', ['-d', 'display_errors=stderr', '-d', 'error_reporting=-1', '-r', HARNESS], { encoding: 'utf8', env })
  if (r.status !== 0 || r.stderr.trim() !== '') throw new Error(`php failed (exit ${r.status}):\n${r.stderr}\n${r.stdout}`)
  return JSON.parse(r.stdout) as HarnessResult
}

function decodePart(part: string): Record<string, unknown> {
  expect(part).toMatch(/^[A-Za-z0-9_-]+$/) // base64url, no padding
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>
}

function tokenOf(result: HarnessResult): string {
  expect(result.token).not.toBeNull()
  return result.token!.token
}

describe('companion plugin source', () => {
  it('signs HS256 with hash_hmac and sets sub, sid, iat and exp, with a life of at most 24 h', () => {
    expect(source).toMatch(/'alg'\s*=>\s*'HS256'/)
    expect(source).toMatch(/hash_hmac\(\s*'sha256',[^;]*,\s*true\s*\)/)
    for (const claim of ['sub', 'iat', 'exp', 'sid']) expect(source).toMatch(new RegExp(`'${claim}'`))
    const ttl = Number(/const AI_GATEWAY_TOKEN_TTL\s*=\s*(\d+)/.exec(source)?.[1])
    expect(ttl).toBeGreaterThan(0)
    expect(ttl).toBeLessThanOrEqual(86_400)
    expect(source).toMatch(/defined\(\s*'AI_PUBLIC_TOKEN_SECRET'\s*\)/)
    expect(source).toMatch(/getenv\(\s*'AI_PUBLIC_TOKEN_SECRET'\s*\)/)
    expect(source).toMatch(/wp_create_nonce\(\s*'wp_rest'\s*\)/)
    expect(source).toMatch(/'wp-api-fetch'/)
  })
})

describe('companion plugin run by PHP', () => {
  it('needs the PHP CLI', () => {
    expect(phpAvailable(), PHP_MISSING).toBe(true)
  })

  it('passes php -l', () => {
    if (!phpAvailable()) throw new Error(PHP_MISSING)
    const r = spawnSync('php', ['-l', PLUGIN], { encoding: 'utf8' })
    expect(r.stdout + r.stderr).toMatch(/No syntax errors detected/)
  })

  it('gives a logged-in user a token with sub = their id (a string), which the gateway accepts', async () => {
    const result = runPlugin({ userId: 2 })
    const token = tokenOf(result)
    const [header, payload] = token.split('.') as [string, string, string]
    expect(decodePart(header)).toEqual({ alg: 'HS256', typ: 'JWT' })
    const claims = decodePart(payload)
    expect(claims).toEqual({ sub: '2', iat: NOW, exp: NOW + 3600 })
    expect(result.token!.expires_at).toBe(NOW + 3600)

    const verified = await verifyPublicToken(token, secret, NOW * 1000 + 1000)
    expect(verified).toEqual({ ok: true, principal: { method: 'token', userId: 2, ownerKey: 'u:2', canCreate: true, isAdmin: false } })
    // Signed with the shared secret and nothing else, and it expires after its hour.
    expect(await verifyPublicToken(token, new TextEncoder().encode('another-secret'), NOW * 1000)).toMatchObject({ ok: false })
    expect(await verifyPublicToken(token, secret, (NOW + 3600) * 1000)).toMatchObject({ ok: false, reason: 'token expired' })
    // A logged-in user gets no visitor cookie.
    expect(result.cookie).toBeNull()
  })

  it('gives a visitor sub "0" and a random sid that it also sets as the ai_gateway_sid cookie', async () => {
    const first = runPlugin({ userId: 0 })
    const claims = decodePart(tokenOf(first).split('.')[1]!)
    expect(Object.keys(claims).sort()).toEqual(['exp', 'iat', 'sid', 'sub'])
    expect(claims).toMatchObject({ sub: '0', iat: NOW, exp: NOW + 3600 })
    expect(claims.sid).toMatch(/^[a-f0-9]{32}$/)
    expect(first.cookie).toBe(claims.sid)
    const verified = await verifyPublicToken(tokenOf(first), secret, NOW * 1000)
    expect(verified).toEqual({ ok: true, principal: { method: 'token', userId: 0, ownerKey: `s:${claims.sid}`, canCreate: true, isAdmin: false } })

    // Another request without the cookie: another sid.
    const other = decodePart(tokenOf(runPlugin({ userId: 0 })).split('.')[1]!)
    expect(other.sid).not.toBe(claims.sid)
  })

  it("keeps the visitor's sid from the cookie, and replaces a cookie that is not one of its sids", async () => {
    const sid = '0123456789abcdef0123456789abcdef'
    const kept = runPlugin({ userId: 0, cookie: sid })
    expect(decodePart(tokenOf(kept).split('.')[1]!).sid).toBe(sid)
    expect(await verifyPublicToken(tokenOf(kept), secret, NOW * 1000)).toMatchObject({ ok: true, principal: { ownerKey: `s:${sid}` } })

    const forged = runPlugin({ userId: 0, cookie: 'x"; DROP TABLE wp_users; --' })
    const replaced = decodePart(tokenOf(forged).split('.')[1]!).sid
    expect(replaced).toMatch(/^[a-f0-9]{32}$/)
    expect(forged.cookie).toBe(replaced)
  })

  it('sets the sid cookie HttpOnly, SameSite=Lax, and Secure only on HTTPS', () => {
    expect(runPlugin().cookie_options).toMatchObject({ httponly: true, samesite: 'Lax', secure: false, path: '/', expires: 1000 + 30 * 86_400 })
    expect(runPlugin({ ssl: true }).cookie_options).toMatchObject({ httponly: true, samesite: 'Lax', secure: true })
  })

  it('caps the token life at 24 h even when a filter asks for more', async () => {
    const long = runPlugin({ userId: 3, filters: { ai_gateway_token_ttl: 7 * 86_400 } })
    const claims = decodePart(tokenOf(long).split('.')[1]!)
    expect((claims.exp as number) - (claims.iat as number)).toBe(86_400)
    expect(await verifyPublicToken(tokenOf(long), secret, NOW * 1000)).toMatchObject({ ok: true })
  })

  it('reads the secret from the environment when the constant is not defined, and issues nothing without one', async () => {
    const fromEnv = runPlugin({ userId: 4, env: { AI_PUBLIC_TOKEN_SECRET: TOKEN_SECRET } })
    expect(await verifyPublicToken(tokenOf(fromEnv), secret, NOW * 1000)).toMatchObject({ ok: true, principal: { userId: 4 } })
    expect(runPlugin({ userId: 4, env: {} }).token).toBeNull()
    expect(runPlugin({ userId: 4, constant: '' }).token).toBeNull()
  })

  it('registers the ai-gateway handle on wp-api-fetch and hands it the token and the REST nonce', async () => {
    const result = runPlugin({ userId: 2, register: true })
    const registered = result.calls!.find(([fn]) => fn === 'wp_register_script')
    expect(registered?.[1].slice(0, 3)).toEqual(['ai-gateway', false, ['wp-api-fetch']])
    const inline = result.calls!.find(([fn]) => fn === 'wp_add_inline_script')
    expect(inline?.[1][0]).toBe('ai-gateway')
    expect(inline?.[1][2]).toBe('before')
    const script = String(inline?.[1][1])
    const data = JSON.parse(/^window\.aiGateway = (.*);$/.exec(script)![1]!) as Record<string, unknown>
    expect(data).toMatchObject({ root: 'http://example.test/wp-json/', loggedIn: true, nonce: 'nonce:wp_rest:2', tokenExpiresAt: expect.any(Number) })
    expect(await verifyPublicToken(data.token as string, secret, Date.now())).toMatchObject({ ok: true, principal: { userId: 2, ownerKey: 'u:2' } })

    const visitor = runPlugin({ userId: 0, register: true })
    const visitorScript = String(visitor.calls!.find(([fn]) => fn === 'wp_add_inline_script')![1][1])
    const visitorData = JSON.parse(/^window\.aiGateway = (.*);$/.exec(visitorScript)![1]!) as Record<string, unknown>
    expect(visitorData).toMatchObject({ loggedIn: false, nonce: '' })
    expect(await verifyPublicToken(visitorData.token as string, secret, Date.now())).toMatchObject({ ok: true, principal: { userId: 0, ownerKey: `s:${visitor.cookie}` } })
  })

  it('hooks in before output, and marks pages that print the handle uncacheable', () => {
    const result = runPlugin()
    expect(result.hooks).toEqual(expect.arrayContaining([
      ['action', 'template_redirect', 'ai_gateway_ensure_visitor_cookie'],
      ['action', 'wp_enqueue_scripts', 'ai_gateway_register_script'],
      ['filter', 'print_scripts_array', 'ai_gateway_mark_uncacheable'],
    ]))
    expect(result.uncacheable_before).toBe(false)
    expect(result.uncacheable_other).toBe(false)
    expect(result.uncacheable_after).toBe(true)
  })
})
