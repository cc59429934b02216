/**
 * docker-compose.yml, read the way Compose reads it (YAML merge keys, `${…}` from .env, here the
 * shipped .env.compose.example), since no Docker engine runs where the tests do.
 *
 * The check that matters is that WordPress and the gateway agree. WordPress's side is the
 * official image's wp-config-docker.php run by the PHP CLI with the wordpress service's
 * environment (WORDPRESS_CONFIG_EXTRA eval()ed, as in the image); the gateway's side is
 * loadConfig() with the gateway service's environment, reading the same file as text.
 *
 * PHP is required: without `php` on PATH these tests fail (CI installs php-cli).
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { loadConfig } from '../../src/config.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const COMPOSE_TEXT = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')
const EXAMPLE_ENV_TEXT = readFileSync(join(ROOT, '.env.compose.example'), 'utf8')
// The official image's wp-config-docker.php; the fixture adds one AI_PROVIDER define, dropped here.
const WP_CONFIG_DOCKER = readFileSync(join(ROOT, 'test/config/fixtures/wp-config-docker.php'), 'utf8')
  .replace(/^define\( 'AI_PROVIDER'.*\n/m, '')

const PHP_MISSING = 'php (the PHP CLI) is not installed, but the compose test runs the WordPress image\'s wp-config.php with it: install it with `apt-get install -y php-cli` (CI: .ci/run does).'

const SALTS = ['AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT'] as const

// ---------------------------------------------------------------------------------------------
// Compose's reading of the file

type Env = Record<string, string>

function parseDotEnv(text: string): Env {
  const env: Env = {}
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line)
    if (m) env[m[1]!] = m[2]!.trim().replace(/^(['"])(.*)\1$/, '$2')
  }
  return env
}

/** Compose's `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `${NAME?error}` and `$$`. */
function interpolate(value: string, env: Env): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (whole, braced?: string, op?: string, arg?: string, bare?: string) => {
    if (whole === '$$') return '$'
    const name = (braced ?? bare)!
    const v = env[name]
    const missing = v === undefined || (op?.startsWith(':') === true && v === '')
    if (op === ':-' || op === '-') return missing ? arg ?? '' : v!
    if (missing) throw new Error(`${name} is not set${op ? `: ${arg}` : ''}`)
    return v!
  })
}

function interpolateAll(node: unknown, env: Env): unknown {
  if (typeof node === 'string') return interpolate(node, env)
  if (Array.isArray(node)) return node.map((item) => interpolateAll(item, env))
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateAll(v, env)]))
  return node
}

interface Service {
  image?: string
  build?: { context?: string; dockerfile?: string } | string
  environment?: Record<string, string | number | boolean | null> | string[]
  volumes?: Array<string | { type?: string; source?: string; target?: string; read_only?: boolean }>
  ports?: Array<string | { target?: number; published?: string | number; host_ip?: string }>
  depends_on?: string[] | Record<string, { condition?: string; restart?: boolean }>
  healthcheck?: { test?: string[] | string; disable?: boolean }
  networks?: string[] | Record<string, { ipv4_address?: string } | null>
}

interface Compose {
  services: Record<string, Service>
  networks?: Record<string, { ipam?: { config?: Array<{ subnet?: string }> } } | null>
  volumes?: Record<string, unknown>
}

const EXAMPLE_ENV = parseDotEnv(EXAMPLE_ENV_TEXT)
const compose = interpolateAll(parse(COMPOSE_TEXT, { merge: true }), EXAMPLE_ENV) as Compose

function service(name: string): Service {
  const s = compose.services[name]
  if (!s) throw new Error(`docker-compose.yml has no service "${name}"`)
  return s
}

function environmentOf(name: string): Env {
  const raw = service(name).environment ?? {}
  if (Array.isArray(raw)) {
    return Object.fromEntries(raw.map((item) => {
      const at = item.indexOf('=')
      return at < 0 ? [item, ''] : [item.slice(0, at), item.slice(at + 1)]
    }))
  }
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, v === null ? '' : String(v)]))
}

interface Mount { source: string; target: string; readOnly: boolean }

function mountsOf(name: string): Mount[] {
  return (service(name).volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { source: v.source ?? '', target: v.target ?? '', readOnly: v.read_only === true }
    const [source = '', target = '', mode = ''] = v.split(':')
    return { source, target, readOnly: mode.split(',').includes('ro') }
  })
}

function dependsOn(name: string): Record<string, { condition?: string; restart?: boolean }> {
  const raw = service(name).depends_on ?? {}
  return Array.isArray(raw) ? Object.fromEntries(raw.map((d) => [d, { condition: 'service_started' }])) : raw
}

function publishedPorts(name: string): Array<{ hostIp: string; published: number; target: number }> {
  return (service(name).ports ?? []).map((p) => {
    if (typeof p !== 'string') return { hostIp: p.host_ip ?? '', published: Number(p.published), target: Number(p.target) }
    const parts = p.split(':')
    const target = Number(parts.pop())
    const published = Number(parts.pop())
    return { hostIp: parts.pop() ?? '', published, target }
  })
}

function ipv4ToInt(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0)
}

function inSubnet(address: string, cidr: string): boolean {
  const [base = '', bits = '32'] = cidr.split('/')
  const size = 2 ** (32 - Number(bits))
  return Math.floor(ipv4ToInt(address) / size) === Math.floor(ipv4ToInt(base) / size)
}

// ---------------------------------------------------------------------------------------------
// What each side sees

const tmp = mkdtempSync(join(tmpdir(), 'compose-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

/** wp-config.php as the image's entrypoint writes it (from wp-config-docker.php). */
function writtenWpConfig(): string {
  const path = join(tmp, 'wp-config.php')
  writeFileSync(path, WP_CONFIG_DOCKER)
  return path
}

/** The constants WordPress itself defines, by running wp-config.php in the PHP CLI. */
function wordpressSees(env: Env): Record<string, string | null> {
  const php = spawnSync('php', ['-v'], { encoding: 'utf8' })
  if (php.status !== 0) throw new Error(PHP_MISSING)
  const abspath = join(tmp, 'wordpress/')
  spawnSync('mkdir', ['-p', abspath])
  writeFileSync(join(abspath, 'wp-settings.php'), '<?php\n')
  const names = ['DB_NAME', 'DB_USER', 'DB_PASSWORD', 'DB_HOST', ...SALTS, 'AI_PUBLIC_TOKEN_SECRET', 'AI_EVENTS_SECRET']
  const code = String.raw`
    define('ABSPATH', getenv('AIGW_ABSPATH'));
    require getenv('AIGW_WP_CONFIG');
    $out = array('table_prefix' => $table_prefix);
    foreach (json_decode(getenv('AIGW_NAMES')) as $name) { $out[$name] = defined($name) ? constant($name) : null; }
    echo json_encode($out);
  `
  const r = spawnSync('php', ['-r', code], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env, AIGW_ABSPATH: abspath, AIGW_WP_CONFIG: writtenWpConfig(), AIGW_NAMES: JSON.stringify(names) },
  })
  if (r.status !== 0) throw new Error(`php failed: ${r.stderr}${r.stdout}`)
  return JSON.parse(r.stdout) as Record<string, string | null>
}

// ---------------------------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('has the five services, and the gateway is built from this repository\'s Dockerfile', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['db', 'gateway', 'nginx', 'redis', 'wordpress'])
    expect(service('db').image).toMatch(/^mariadb:/)
    expect(service('redis').image).toMatch(/^redis:/)
    expect(service('wordpress').image).toMatch(/^wordpress:/)
    expect(service('nginx').image).toMatch(/^nginx:/)
    const build = service('gateway').build
    const context = typeof build === 'string' ? build : build?.context
    const dockerfile = typeof build === 'string' ? 'Dockerfile' : build?.dockerfile ?? 'Dockerfile'
    expect(context).toBe('.')
    expect(dockerfile).toBe('Dockerfile')
    expect(existsSync(join(ROOT, context!, dockerfile))).toBe(true)
  })

  it('WordPress and the gateway see the same database, table prefix, salts and AI secrets', () => {
    const wordpressEnv = environmentOf('wordpress')
    const gatewayEnv = environmentOf('gateway')
    const wp = wordpressSees(wordpressEnv)
    const gateway = loadConfig({ ...gatewayEnv, WP_CONFIG_PATH: writtenWpConfig() })

    // The values come from .env, not from the file's built-in defaults.
    expect(wp.DB_PASSWORD).toBe(EXAMPLE_ENV.WORDPRESS_DB_PASSWORD)
    for (const salt of SALTS) expect(wp[salt], salt).toBe(EXAMPLE_ENV[`WORDPRESS_${salt}`])
    expect(wp.AI_PUBLIC_TOKEN_SECRET).toBe(EXAMPLE_ENV.AI_PUBLIC_TOKEN_SECRET)
    expect(wp.AI_EVENTS_SECRET).toBe(EXAMPLE_ENV.AI_EVENTS_SECRET)

    expect(gateway.embedded).toBe(false)
    const db = new URL(gateway.databaseUrl)
    expect(db.protocol).toBe('mysql:')
    expect(`${db.hostname}:${db.port}`).toBe(wp.DB_HOST)
    expect(decodeURIComponent(db.pathname.slice(1))).toBe(wp.DB_NAME)
    expect(decodeURIComponent(db.username)).toBe(wp.DB_USER)
    expect(decodeURIComponent(db.password)).toBe(wp.DB_PASSWORD)
    expect(gateway.tablePrefix).toBe(wp.table_prefix)
    for (const salt of SALTS) expect(gateway.wordpress[salt], salt).toBe(wp[salt])
    expect(gateway.publicTokenSecret).toBe(wp.AI_PUBLIC_TOKEN_SECRET)
    expect(gatewayEnv.AI_EVENTS_SECRET).toBe(wp.AI_EVENTS_SECRET)
    expect(wp.AI_EVENTS_SECRET).toMatch(/^whsec_[A-Za-z0-9+/]+={0,2}$/)

    // MariaDB creates the database and the user WordPress and the gateway log in as.
    const mariadb = environmentOf('db')
    expect(mariadb.MARIADB_DATABASE).toBe(wp.DB_NAME)
    expect(mariadb.MARIADB_USER).toBe(wp.DB_USER)
    expect(mariadb.MARIADB_PASSWORD).toBe(wp.DB_PASSWORD)
    expect(wp.DB_HOST).toMatch(/^db(:3306)?$/)
  })

  it('the gateway reads wp-config.php from the volume WordPress writes, read-only', () => {
    const path = environmentOf('gateway').WP_CONFIG_PATH!
    expect(path).toBe('/var/www/html/wp-config.php')
    const gatewayMount = mountsOf('gateway').find((m) => path.startsWith(`${m.target}/`))
    expect(gatewayMount).toBeDefined()
    expect(gatewayMount!.readOnly).toBe(true)
    expect(Object.keys(compose.volumes ?? {})).toContain(gatewayMount!.source)
    // The official image writes wp-config.php into /var/www/html at start-up.
    const wordpressMount = mountsOf('wordpress').find((m) => m.source === gatewayMount!.source)
    expect(wordpressMount).toMatchObject({ target: '/var/www/html', readOnly: false })
    expect(gatewayMount!.target).toBe(wordpressMount!.target)
  })

  it('WordPress loads the companion mu-plugin from this repository', () => {
    const mount = mountsOf('wordpress').find((m) => m.target.startsWith('/var/www/html/wp-content/mu-plugins/'))
    expect(mount).toMatchObject({ source: './examples/wordpress/ai-gateway-companion.php', readOnly: true })
    expect(existsSync(join(ROOT, mount!.source))).toBe(true)
  })

  it('nginx runs the tested recipe, docs/proxy/nginx.conf, whose upstreams are the compose services', () => {
    const mount = mountsOf('nginx').find((m) => m.target === '/etc/nginx/conf.d/default.conf')
    expect(mount).toMatchObject({ source: './docs/proxy/nginx.conf', readOnly: true })
    const recipe = readFileSync(join(ROOT, mount!.source), 'utf8')
    const upstreams = [...recipe.matchAll(/upstream\s+\w+\s*\{\s*server\s+([\w.-]+):(\d+);/g)].map((m) => [m[1], Number(m[2])])
    expect(upstreams).toEqual([['gateway', 3000], ['wordpress', 80]])
    // The gateway's image listens on 3000 and nothing here moves it.
    expect(readFileSync(join(ROOT, 'Dockerfile'), 'utf8')).toMatch(/ENV [^\n]*PORT=3000/)
    expect(environmentOf('gateway').PORT).toBeUndefined()
    expect(recipe).toMatch(/\n\s*listen 80;/)
  })

  it('publishes only nginx, on the port PUBLIC_URL names; the gateway (and its ops routes) stays inside', () => {
    const publicUrl = new URL(environmentOf('gateway').PUBLIC_URL!)
    expect(publicUrl.origin).toBe('http://localhost:8080')
    expect(publishedPorts('nginx')).toEqual([{ hostIp: '127.0.0.1', published: Number(publicUrl.port), target: 80 }])
    for (const name of ['db', 'redis', 'wordpress', 'gateway']) expect(service(name).ports ?? [], name).toEqual([])
  })

  it('TRUST_PROXY is nginx\'s fixed address on the site network, and only that', () => {
    const trust = environmentOf('gateway').TRUST_PROXY!
    expect(trust).not.toMatch(/true|\*/)
    const networks = service('nginx').networks
    const entries = Array.isArray(networks) ? [] : Object.entries(networks ?? {})
    expect(entries).toHaveLength(1)
    const [networkName, settings] = entries[0]!
    expect(trust).toBe(settings?.ipv4_address)
    const subnet = compose.networks?.[networkName]?.ipam?.config?.[0]?.subnet
    expect(subnet).toMatch(/^\d+\.\d+\.\d+\.\d+\/\d+$/)
    expect(inSubnet(trust, subnet!)).toBe(true)
    for (const name of ['gateway', 'wordpress', 'db', 'redis']) expect(service(name).networks, name).toEqual([networkName])
  })

  it('the gateway sends its events to WordPress\'s own namespace through nginx', () => {
    const url = new URL(environmentOf('gateway').AI_EVENTS_URL!)
    expect(url.hostname).toBe('nginx')
    const route = url.searchParams.get('rest_route') ?? url.pathname.replace(/^\/wp-json/, '')
    expect(route).toBe('/ai-gateway/v1/events')
    expect(url.pathname === '/' || url.pathname === '/wp-json/ai-gateway/v1/events').toBe(true)
  })

  it('every service waited for with service_healthy has a healthcheck', () => {
    const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
    const expected: Record<string, string[]> = { wordpress: ['db'], gateway: ['db', 'redis', 'wordpress'], nginx: ['gateway', 'wordpress'] }
    for (const [name, needs] of Object.entries(expected)) {
      const deps = dependsOn(name)
      expect(Object.keys(deps).sort(), name).toEqual([...needs].sort())
      for (const dep of needs) {
        expect(deps[dep]?.condition, `${name} → ${dep}`).toBe('service_healthy')
        const target = service(dep)
        const hasCheck = target.healthcheck ? target.healthcheck.disable !== true && target.healthcheck.test !== undefined : target.build !== undefined && /^HEALTHCHECK\s+(?!NONE)/m.test(dockerfile)
        expect(hasCheck, `${dep} has a healthcheck`).toBe(true)
      }
    }
    // nginx resolves upstream names once: it must restart when they are recreated.
    expect(dependsOn('nginx').gateway?.restart).toBe(true)
    expect(dependsOn('nginx').wordpress?.restart).toBe(true)
  })

  it('.env.compose.example sets every required variable, each to an obvious placeholder', () => {
    const required = [...COMPOSE_TEXT.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*):?\?/g)].map((m) => m[1]!)
    expect(required.length).toBeGreaterThan(10)
    for (const name of new Set(required)) {
      const value = EXAMPLE_ENV[name]
      expect(value, name).toBeTruthy()
      const readable = value!.startsWith('whsec_') ? Buffer.from(value!.slice(6), 'base64').toString('utf8') : value!
      expect(readable, name).toMatch(/^replace-me/)
    }
    // Without .env, Compose stops with the message instead of starting with empty secrets.
    expect(() => interpolateAll(parse(COMPOSE_TEXT, { merge: true }), {})).toThrow(/copy \.env\.compose\.example to \.env/)
  })
})
