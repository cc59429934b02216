import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../../src/config.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const TSX = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url))
const MYSQL = 'mysql://root@127.0.0.1:3306/wordpress'

const tmp = mkdtempSync(join(tmpdir(), 'gw-t2-config-'))
afterAll(() => rmSync(tmp, { recursive: true, force: true }))

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`)
}

function wpConfig(name: string, body: string): string {
  const path = join(tmp, name)
  writeFileSync(path, `<?php\n${body}\n$table_prefix = 'wpx_';\nrequire_once ABSPATH . 'wp-settings.php';\n`)
  return path
}

const SALTS = `
define( 'AUTH_KEY',         'auth key ]q%)8' );
define( 'SECURE_AUTH_KEY',  'secure auth key' );
define( 'LOGGED_IN_KEY',    'logged in key' );
define( 'NONCE_KEY',        'nonce key' );
define( 'AUTH_SALT',        'auth salt' );
define( 'SECURE_AUTH_SALT', 'secure auth salt' );
define( 'LOGGED_IN_SALT',   'logged in salt' );
define( 'NONCE_SALT',       'nonce salt' );
`

describe('loadConfig: one bad value stops start-up with an error naming the variable', () => {
  const cases: [string, Record<string, string>, string][] = [
    ['PORT=abc', { PORT: 'abc' }, 'PORT'],
    ['PORT=70000', { PORT: '70000' }, 'PORT'],
    ['WORKER_CONCURRENCY=-1', { WORKER_CONCURRENCY: '-1' }, 'WORKER_CONCURRENCY'],
    ['JOB_OWNER_CONCURRENCY=-1', { JOB_OWNER_CONCURRENCY: '-1' }, 'JOB_OWNER_CONCURRENCY'],
    ['JOB_OWNER_CONCURRENCY=two', { JOB_OWNER_CONCURRENCY: 'two' }, 'JOB_OWNER_CONCURRENCY'],
    ['AI_PROVIDER=foo', { AI_PROVIDER: 'foo' }, 'AI_PROVIDER'],
    ['AI_MODELS that is not JSON', { AI_MODELS: '{not json' }, 'AI_MODELS'],
    ['AI_MODELS with an unknown provider', { AI_MODELS: '{"m":{"provider":"cohere"}}' }, 'AI_MODELS'],
    ['AI_MODELS that is an array', { AI_MODELS: '[]' }, 'AI_MODELS'],
    ['DATABASE_URL=postgres://…', { DATABASE_URL: 'postgres://u:p@localhost:5432/wp' }, 'DATABASE_URL'],
    ['DATABASE_URL without a database name', { DATABASE_URL: 'mysql://root@127.0.0.1:3306' }, 'DATABASE_URL'],
    ['TRUST_PROXY=true', { TRUST_PROXY: 'true' }, 'TRUST_PROXY'],
    ['TRUST_PROXY=*', { TRUST_PROXY: '*' }, 'TRUST_PROXY'],
    ['AI_ENCRYPTION_KEY of 16 bytes', { AI_ENCRYPTION_KEY: Buffer.alloc(16, 1).toString('base64') }, 'AI_ENCRYPTION_KEY'],
    ['AI_QUEUE_TIMEOUT=5', { AI_QUEUE_TIMEOUT: '5' }, 'AI_QUEUE_TIMEOUT'],
    ['AI_WORKER_URL without PUBLIC_URL', { DATABASE_URL: MYSQL, AI_WORKER_URL: 'https://worker.example/jobs', AI_WEBHOOK_SECRET: 's', AI_JWT_PRIVATE_KEY: 'k' }, 'PUBLIC_URL'],
    ['AI_WORKER_URL without AI_WEBHOOK_SECRET', { DATABASE_URL: MYSQL, PUBLIC_URL: 'https://example.com', AI_WORKER_URL: 'https://worker.example/jobs', AI_JWT_PRIVATE_KEY: 'k' }, 'AI_WEBHOOK_SECRET'],
    ['RATE_LIMIT_MAX=ten', { RATE_LIMIT_MAX: 'ten' }, 'RATE_LIMIT_MAX'],
    ['PUBLIC_URL that is not http(s)', { PUBLIC_URL: 'ftp://example.com' }, 'PUBLIC_URL'],
    ['WP_TABLE_PREFIX with a quote', { WP_TABLE_PREFIX: "wp'; DROP" }, 'WP_TABLE_PREFIX'],
    ['LOG_LEVEL=loud', { LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    ['WP_CONFIG_PATH that does not exist', { WP_CONFIG_PATH: '/nonexistent/wp-config.php' }, 'WP_CONFIG_PATH'],
  ]

  it.each(cases)('%s', (_why, env, variable) => {
    const err = configError(env)
    expect(err.message.startsWith(`${variable}:`)).toBe(true)
    expect(err.message).not.toContain('\n')
    expect(err.variable).toBe(variable)
  })

  it('accepts the good neighbours of those values', () => {
    const c = loadConfig({
      PORT: '8080', WORKER_CONCURRENCY: '0', AI_PROVIDER: 'echo', AI_MODELS: '{"m":{"provider":"openai","url":"http://127.0.0.1:9/v1"}}',
      DATABASE_URL: MYSQL, TRUST_PROXY: '10.0.0.0/8, 127.0.0.1', AI_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64'), AI_QUEUE_TIMEOUT: '2',
    })
    expect(c.port).toBe(8080)
    expect(c.workerConcurrency).toBe(0)
    expect(c.jobOwnerConcurrency).toBe(4)
    expect(loadConfig({ DATABASE_URL: MYSQL, JOB_OWNER_CONCURRENCY: '0' }).jobOwnerConcurrency).toBe(0)
    expect(Object.keys(c.models)).toEqual(['m'])
    expect(c.trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1'])
    expect(c.encryptionKeys?.current.key.length).toBe(32)
    expect(c.encryptionKeys?.current.id).toBeUndefined()
    expect(c.queueTimeoutSeconds).toBe(2)
    expect(Object.isFrozen(c)).toBe(true)
    const external = loadConfig({ DATABASE_URL: MYSQL, PUBLIC_URL: 'https://example.com/blog/', AI_WORKER_URL: 'https://worker.example/jobs', AI_WEBHOOK_SECRET: 'whsec_c2VjcmV0', AI_JWT_PRIVATE_KEY: 'pem' })
    expect(external.workerUrl).toBe('https://worker.example/jobs')
    expect(external.publicUrl).toBe('https://example.com/blog')
    expect(external.routePrefix).toBe('/blog/wp-json/ai/v1')
  })
})

describe('the embedded default', () => {
  it('is on only when neither DATABASE_URL nor WP_CONFIG_PATH is set', () => {
    const embedded = loadConfig({})
    expect(embedded.embedded).toBe(true)
    expect(embedded.databaseUrl).toBe('sqlite:./data/ai-gateway.sqlite')
    expect(embedded.provider).toBe('echo')
    expect(embedded.defaultModel).toBe('echo')
    expect(embedded.redisUrl).toBeUndefined()
    expect(embedded.publicUrl).toBe('http://127.0.0.1:3000')
    expect(embedded.routePrefix).toBe('/wp-json/ai/v1')

    expect(loadConfig({ DATABASE_URL: MYSQL }).embedded).toBe(false)
    expect(loadConfig({ DATABASE_URL: 'sqlite:/tmp/x.sqlite' }).embedded).toBe(false)
    const path = wpConfig('embedded-wp-config.php', "define('DB_NAME', 'wordpress');")
    expect(loadConfig({ WP_CONFIG_PATH: path }).embedded).toBe(false)
    // Other settings do not turn it off.
    expect(loadConfig({ REDIS_URL: 'redis://127.0.0.1:6379', PORT: '3001' }).embedded).toBe(true)
  })

  it('does not generate secrets by itself outside the embedded default', () => {
    const c = loadConfig({ DATABASE_URL: MYSQL })
    expect(c.publicTokenSecret).toBeUndefined()
    expect(c.webhookSecrets).toEqual([])
    expect(c.jwtPrivateKey).toBeUndefined()
  })
})

describe('WP_CONFIG_PATH', () => {
  it('gives the MySQL URL (host:port), the table prefix and the salts', () => {
    const path = wpConfig('wp-config-port.php', `
define( 'DB_NAME', 'wp_site' );
define( 'DB_USER', 'wp_user' );
define( 'DB_PASSWORD', 'p@ss:w/rd#1' );
define( 'DB_HOST', 'db.internal:3307' );
${SALTS}
define( 'AI_PROVIDER', 'openai' );
define( 'AI_DEFAULT_MODEL', 'gpt-4o-mini' );
`)
    const c = loadConfig({ WP_CONFIG_PATH: path })
    const u = new URL(c.databaseUrl)
    expect(u.protocol).toBe('mysql:')
    expect(u.hostname).toBe('db.internal')
    expect(u.port).toBe('3307')
    expect(u.pathname).toBe('/wp_site')
    expect(decodeURIComponent(u.username)).toBe('wp_user')
    expect(decodeURIComponent(u.password)).toBe('p@ss:w/rd#1')
    expect(c.tablePrefix).toBe('wpx_')
    expect(c.wordpress).toMatchObject({
      AUTH_KEY: 'auth key ]q%)8', SECURE_AUTH_KEY: 'secure auth key', LOGGED_IN_KEY: 'logged in key', NONCE_KEY: 'nonce key',
      AUTH_SALT: 'auth salt', SECURE_AUTH_SALT: 'secure auth salt', LOGGED_IN_SALT: 'logged in salt', NONCE_SALT: 'nonce salt',
    })
    // AI_* defines are read too.
    expect(c.provider).toBe('openai')
    expect(c.defaultModel).toBe('gpt-4o-mini')
    expect(c.embedded).toBe(false)
  })

  it('gives a socket URL for host:/socket/path', () => {
    const path = wpConfig('wp-config-socket.php', `
define( 'DB_NAME', 'wp_socket' );
define( 'DB_USER', 'root' );
define( 'DB_PASSWORD', '' );
define( 'DB_HOST', 'localhost:/var/run/mysqld/mysqld.sock' );
`)
    const c = loadConfig({ WP_CONFIG_PATH: path })
    const u = new URL(c.databaseUrl)
    expect(u.protocol).toBe('mysql:')
    expect(u.pathname).toBe('/wp_socket')
    expect(u.searchParams.get('socket')).toBe('/var/run/mysqld/mysqld.sock')
  })

  it('lets the environment win over wp-config.php', () => {
    const path = wpConfig('wp-config-env.php', `
define( 'DB_NAME', 'from_wp_config' );
define( 'DB_USER', 'wp' );
define( 'DB_PASSWORD', 'x' );
define( 'DB_HOST', 'db.internal' );
${SALTS}
define( 'AI_PROVIDER', 'anthropic' );
define( 'AI_DEFAULT_MODEL', 'claude' );
define( 'AI_MAX_TOKENS', 512 );
`)
    const c = loadConfig({
      WP_CONFIG_PATH: path, DATABASE_URL: 'mysql://other@10.0.0.5:3306/from_env', WP_TABLE_PREFIX: 'envp_',
      WP_AUTH_KEY: 'auth key from env', AI_PROVIDER: 'echo', AI_DEFAULT_MODEL: 'echo',
    })
    expect(c.databaseUrl).toBe('mysql://other@10.0.0.5:3306/from_env')
    expect(c.tablePrefix).toBe('envp_')
    expect(c.wordpress.AUTH_KEY).toBe('auth key from env')
    expect(c.wordpress.AUTH_SALT).toBe('auth salt')
    expect(c.provider).toBe('echo')
    expect(c.defaultModel).toBe('echo')
    // What the environment does not set still comes from wp-config.php.
    expect(c.maxTokens).toBe(512)
    expect(c.embedded).toBe(false)
  })

  it('stops with an error naming the constant for an expression it cannot read', () => {
    const path = wpConfig('wp-config-expr.php', `
define( 'DB_NAME', 'wp' );
define( 'AUTH_KEY', md5( 'x' ) );
`)
    const err = configError({ WP_CONFIG_PATH: path })
    expect(err.message).toContain('AUTH_KEY')
  })
})

describe('src/server.ts with a bad setting', () => {
  it('exits 1 with exactly one stderr line naming PORT', async () => {
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: 'abc' }
    const failure = await run(process.execPath, [TSX, 'src/server.ts'], { cwd: ROOT, env, timeout: 30_000 }).then(
      (ok) => ({ code: 0, stderr: ok.stderr, stdout: ok.stdout }),
      (err: { code: number; stderr: string; stdout: string }) => err,
    )
    expect(failure.code).toBe(1)
    const lines = failure.stderr.split('\n').filter((l) => l.trim() !== '')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain('PORT')
    expect(lines[0]).toContain('abc')
    expect(lines[0]).not.toMatch(/\bat .*\.ts:\d+/)
    expect(failure.stdout).toBe('')
  })
})

describe('AI_MODELS fallbacks and streaming options', () => {
  const models = (entries: Record<string, unknown>) => ({ AI_MODELS: JSON.stringify(entries) })

  it('accepts a chain of allowed models, the default model included, and keeps it in order', () => {
    const config = loadConfig({
      AI_DEFAULT_MODEL: 'echo',
      ...models({
        main: { provider: 'echo', fallback: ['backup', 'echo'] },
        backup: { provider: 'echo', fallback: ['echo'], delta_ms: 5, break_after: 2, fail_times: 1 },
      }),
    })
    expect(config.models.main!.fallback).toEqual(['backup', 'echo'])
    expect(config.models.backup).toMatchObject({ delta_ms: 5, break_after: 2, fail_times: 1 })
  })

  it.each([
    ['an unknown model', { main: { provider: 'echo', fallback: ['nowhere'] } }, 'entry "main": fallback "nowhere" is not an allowed model'],
    ['the model itself', { main: { provider: 'echo', fallback: ['main'] } }, 'entry "main": fallback names the model itself'],
    ['a cycle of two', { a: { provider: 'echo', fallback: ['b'] }, b: { provider: 'echo', fallback: ['a'] } }, 'fallbacks form a cycle: a → b → a'],
    ['a longer cycle', { a: { provider: 'echo', fallback: ['echo', 'b'] }, b: { provider: 'echo', fallback: ['c'] }, c: { provider: 'echo', fallback: ['b'] } }, 'fallbacks form a cycle: b → c → b'],
    ['a string instead of a list', { main: { provider: 'echo', fallback: 'echo' } }, 'entry "main": fallback must be an array of model names'],
    ['a list holding a number', { main: { provider: 'echo', fallback: [3] } }, 'entry "main": fallback must be an array of model names'],
    ['two ways to fail', { main: { provider: 'echo', fail_status: 503, break_after: 1 } }, 'entry "main": fail_status and break_after are two ways to fail; set one'],
    ['a fractional delta_ms', { main: { provider: 'echo', delta_ms: 1.5 } }, 'entry "main": delta_ms must be a whole number'],
  ])('refuses %s at start-up, in one line naming AI_MODELS', (_why, entries, message) => {
    const err = configError({ AI_DEFAULT_MODEL: 'echo', ...models(entries) })
    expect(err.variable).toBe('AI_MODELS')
    expect(err.message).toContain(message)
    expect(err.message.startsWith('AI_MODELS: ')).toBe(true)
    expect(err.message).not.toContain('\n')
  })
})
