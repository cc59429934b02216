/**
 * docs/proxy/nginx.conf, run by Debian's nginx in front of the real gateway (buildApp on SQLite,
 * listening on loopback) and a stand-in WordPress (a plain HTTP server that says who it is). The
 * recipe is used as shipped; only its upstream addresses and `listen` port are replaced, and for
 * the subdirectory install the three map inputs its comment tells a user to change.
 *
 * The client connects from 127.0.0.2, so the address nginx forwards can be told apart from the
 * address of nginx itself (127.0.0.1, which is TRUST_PROXY).
 *
 * nginx is required: without it these tests fail (CI installs it in .ci/run).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'
import { connect, createServer as createTcpServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { bearer, freshDatabase, testConfig } from '../helpers.js'

const RECIPE = readFileSync(fileURLToPath(new URL('../../docs/proxy/nginx.conf', import.meta.url)), 'utf8')
const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx'].find((p) => existsSync(p))
const NGINX_MISSING = 'nginx is not installed, but the proxy recipe test runs docs/proxy/nginx.conf with it: install it with `apt-get install -y nginx` (CI: .ci/run does).'

/** The client's own address: not nginx's (127.0.0.1), so forwarding shows. */
const CLIENT = '127.0.0.2'
const SPOOFED = '203.0.113.7'

// ---------------------------------------------------------------------------------------------
// The recipe with this machine's addresses

function replaceOnce(text: string, from: string, to: string): string {
  const at = text.indexOf(from)
  if (at < 0 || text.indexOf(from, at + 1) >= 0) {
    throw new Error(`docs/proxy/nginx.conf must contain "${from}" exactly once (the test replaces it)`)
  }
  return text.slice(0, at) + to + text.slice(at + from.length)
}

function recipeFor(ports: { nginx: number; gateway: number; wordpress: number }, basePath = ''): string {
  let conf = RECIPE
  conf = replaceOnce(conf, 'server gateway:3000;', `server 127.0.0.1:${ports.gateway};`)
  conf = replaceOnce(conf, 'server wordpress:80;', `server 127.0.0.1:${ports.wordpress};`)
  conf = replaceOnce(conf, 'listen 80;', `listen 127.0.0.1:${ports.nginx};`)
  if (basePath) {
    // What the recipe's comment tells a subdirectory install to do.
    conf = replaceOnce(conf, '"~^/wp-json(?<wp_rest_path>/.*)$"', `"~^${basePath}/wp-json(?<wp_rest_path>/.*)$"`)
    conf = replaceOnce(conf, '\n    /                                   $arg_rest_route;', `\n    ${basePath}/ $arg_rest_route;\n    ${basePath} $arg_rest_route;`)
    conf = replaceOnce(conf, '\n    /index.php                          $arg_rest_route;', `\n    ${basePath}/index.php $arg_rest_route;`)
  }
  return conf
}

// ---------------------------------------------------------------------------------------------
// Processes and servers

async function freePort(): Promise<number> {
  const server = createTcpServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

interface Nginx {
  port: number
  stop(): Promise<void>
}

/** Starts nginx in the foreground with the site file inside a minimal main configuration. */
async function startNginx(dir: string, port: number, site: string): Promise<Nginx> {
  if (!NGINX) throw new Error(NGINX_MISSING)
  for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, sub), { recursive: true })
  writeFileSync(join(dir, 'site.conf'), site)
  writeFileSync(join(dir, 'nginx.conf'), [
    // Workers of a root master run as `user`; root keeps them able to use the temp directories.
    process.getuid?.() === 0 ? 'user root;' : '',
    'worker_processes 1;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} warn;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${join(dir, 'access.log')};`,
    `  client_body_temp_path ${join(dir, 'client_body')};`,
    `  proxy_temp_path ${join(dir, 'proxy')};`,
    `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
    `  scgi_temp_path ${join(dir, 'scgi')};`,
    `  include ${join(dir, 'site.conf')};`,
    '}',
    '',
  ].join('\n'))

  let output = ''
  const child: ChildProcess = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.on('data', (chunk) => { output += String(chunk) })
  child.stderr?.on('data', (chunk) => { output += String(chunk) })
  let exited: number | null | undefined
  const exit = new Promise<void>((resolve) => child.once('exit', (code) => { exited = code; resolve() }))

  const errorLog = () => (existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '')
  const deadline = Date.now() + 5_000
  while (!(await accepts(port))) {
    if (exited !== undefined) throw new Error(`nginx exited (${exited}) with the recipe:\n${output}${errorLog()}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`nginx did not listen on 127.0.0.1:${port} within 5 s:\n${output}${errorLog()}`)
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  return {
    port,
    stop: async () => {
      if (exited === undefined) {
        child.kill('SIGTERM')
        await exit
      }
    },
  }
}

interface SeenByWordPress {
  method: string
  url: string
  headers: IncomingHttpHeaders
}

/** Stands in for WordPress: answers everything with who it is and what it was asked. */
async function startWordPress(seen: SeenByWordPress[]): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers })
      const url = new URL(req.url ?? '/', 'http://wordpress.invalid')
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ served_by: 'wordpress', path: url.pathname, query: url.search }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return server
}

async function startGateway(name: string, env: Record<string, string>, logLines: string[]) {
  const db = await freshDatabase('sqlite', name)
  const sink = new Writable({ write(chunk, _encoding, done) { logLines.push(String(chunk)); done() } })
  const app = await buildApp(testConfig({ DATABASE_URL: db.url, LOG_LEVEL: 'info', ...env }), { logger: pino({ level: 'info' }, sink), startWorkers: false })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as AddressInfo).port, cleanup: db.cleanup }
}

// ---------------------------------------------------------------------------------------------
// A client on 127.0.0.2

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  text: string
  json: Record<string, unknown> | undefined
}

function send(port: number, path: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port,
      path,
      method: options.method ?? 'GET',
      localAddress: CLIENT,
      agent: false,
      headers: { 'X-Forwarded-For': SPOOFED, ...options.headers },
    }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk })
      res.on('end', () => {
        let json: Record<string, unknown> | undefined
        try {
          json = JSON.parse(text) as Record<string, unknown>
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json })
      })
    })
    req.setTimeout(5_000, () => req.destroy(new Error(`no answer to ${path} within 5 s`)))
    req.on('error', reject)
    req.end(options.body)
  })
}

/** The gateway stamps X-Request-Id on every answer; the stand-in WordPress names itself. */
function servedBy(answer: Answer): 'gateway' | 'wordpress' {
  const fromWordPress = answer.json?.served_by === 'wordpress'
  const fromGateway = typeof answer.headers['x-request-id'] === 'string'
  if (fromWordPress && !fromGateway) return 'wordpress'
  if (fromGateway && !fromWordPress) return 'gateway'
  throw new Error(`cannot tell who answered (${answer.status}): ${answer.text.slice(0, 200)}`)
}

interface EventStream {
  status: number
  headers: IncomingHttpHeaders
  /** The next complete event (`event: …` up to its blank line). */
  next(): Promise<string>
  /** Resolves when the server ends the stream. */
  ended: Promise<void>
  close(): void
}

/** Opens an event stream through nginx and hands out its events one by one as they arrive. */
function openEvents(port: number, path: string, headers: Record<string, string>): Promise<EventStream> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, localAddress: CLIENT, agent: false, headers: { Accept: 'text/event-stream', 'Accept-Encoding': 'gzip, deflate, br', ...headers } }, (res) => {
      let text = ''
      const events: string[] = []
      const waiting: Array<(event: string) => void> = []
      let markEnded: () => void = () => {}
      const ended = new Promise<void>((r) => { markEnded = r })
      res.setEncoding('utf8')
      res.on('end', () => markEnded())
      res.on('data', (chunk: string) => {
        text += chunk
        for (let m = /(?:^|\n)(event: [^]*?\n\n)/.exec(text); m; m = /(?:^|\n)(event: [^]*?\n\n)/.exec(text)) {
          text = text.slice(m.index + m[0].length)
          const waiter = waiting.shift()
          if (waiter) waiter(m[1]!)
          else events.push(m[1]!)
        }
      })
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        next: () => {
          const queued = events.shift()
          if (queued !== undefined) return Promise.resolve(queued)
          return new Promise((r, fail) => {
            const timer = setTimeout(() => fail(new Error(`no further event through nginx within 5 s on ${path}`)), 5_000)
            waiting.push((event) => { clearTimeout(timer); r(event) })
          })
        },
        ended,
        close: () => req.destroy(),
      })
    })
    req.setTimeout(5_000, () => req.destroy(new Error(`no response headers for ${path} within 5 s`)))
    req.on('error', reject)
    req.end()
  })
}

function eventData(event: string): Record<string, unknown> {
  const data = /(?:^|\n)data: (.*)\n/.exec(event)?.[1]
  if (data === undefined) throw new Error(`event without data: ${event}`)
  return JSON.parse(data) as Record<string, unknown>
}

// ---------------------------------------------------------------------------------------------

const tmp = mkdtempSync(join(tmpdir(), 'nginx-recipe-'))
const seen: SeenByWordPress[] = []
const stops: Array<() => Promise<void>> = []
let wordpressPort = 0

beforeAll(async () => {
  if (!NGINX) throw new Error(NGINX_MISSING)
  const wordpress = await startWordPress(seen)
  stops.push(() => new Promise<void>((resolve) => { wordpress.closeAllConnections(); wordpress.close(() => resolve()) }))
  wordpressPort = (wordpress.address() as AddressInfo).port
})

afterAll(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => {})
  rmSync(tmp, { recursive: true, force: true })
})

async function stack(name: string, basePath = '') {
  const logLines: string[] = []
  const nginxPort = await freePort()
  const publicUrl = `http://127.0.0.1:${nginxPort}${basePath}`
  const gateway = await startGateway(name, { TRUST_PROXY: '127.0.0.1', PUBLIC_URL: publicUrl }, logLines)
  stops.push(async () => { await gateway.app.close(); await gateway.cleanup() })
  const dir = join(tmp, name)
  mkdirSync(dir)
  const nginx = await startNginx(dir, nginxPort, recipeFor({ nginx: nginxPort, gateway: gateway.port, wordpress: wordpressPort }, basePath))
  stops.push(nginx.stop)
  return { port: nginxPort, publicUrl, app: gateway.app as FastifyInstance, logLines }
}

describe('docs/proxy/nginx.conf at the site root', () => {
  let site: Awaited<ReturnType<typeof stack>>
  beforeAll(async () => {
    site = await stack('root')
  })

  it('sends POST /wp-json/ai/v1/jobs without credentials to the gateway, which answers 401 in the WordPress shape', async () => {
    const answer = await send(site.port, '/wp-json/ai/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"input":"hello"}' })
    expect(answer.status).toBe(401)
    expect(answer.json).toMatchObject({ code: 'ai_unauthorized', data: { status: 401 } })
    expect(answer.headers['x-request-id']).toMatch(/^[A-Za-z0-9._:-]{1,128}$/)
    expect(servedBy(answer)).toBe('gateway')
  })

  it.each([
    '/wp-json/ai/v1/jobs',
    '/wp-json/ai/v1/jobs/',
    '/wp-json/ai/v1/jobs/123',
    '/wp-json/ai/v1/jobs/123/events',
    '/wp-json/ai/v1/jobs?status=pending&limit=5',
    '/wp-json/ai/v1/webhook',
    '/wp-json/ai/v1/admin',
    '/wp-json/ai/v1/admin/jobs',
    '/wp-json/ai/v1/usage',
    '/wp-json/ai/v1/openai/models',
    '/wp-json/ai/v1/openai/chat/completions',
    '/wp-json/ai/v1/openapi.json',
    '/wp-json/ai/v1/.well-known/jwks.json',
    '/?rest_route=/ai/v1/jobs',
    '/?rest_route=/ai/v1/jobs/123&_wpnonce=abc',
    '/?_locale=user&rest_route=/ai/v1/jobs',
    '/index.php?rest_route=/ai/v1/jobs',
    '/index.php?rest_route=/ai/v1/.well-known/jwks.json',
    '/?rest_route=%2Fai%2Fv1%2Fjobs',
  ])('GET %s reaches the gateway', async (path) => {
    const answer = await send(site.port, path)
    expect(servedBy(answer)).toBe('gateway')
    // A jobs route answers 401 (no credentials) only if the gateway got the route intact.
    if (/\/jobs/.test(decodeURIComponent(path))) expect(answer.json).toMatchObject({ code: 'ai_unauthorized' })
  })

  it.each([
    '/',
    '/hello-world/',
    '/wp-admin/',
    '/wp-json/',
    '/wp-json/ai/v1',
    '/wp-json/ai/v1/',
    '/wp-json/ai/v1/logs',
    '/wp-json/ai/v1/logs/7',
    '/wp-json/ai/v1/roles-users',
    '/wp-json/wp/v2/posts',
    '/wp-json/ai/v1/jobsx',
    '/wp-json/ai/v1/admin-tools',
    '/wp-json/ai/v1/openapi.jsonx',
    '/wp-json/ai/v2/jobs',
    '/wp-json/ai/v1/jobs/../logs',
    '/blog/wp-json/ai/v1/jobs',
    '/?rest_route=/ai/v1/logs',
    '/?rest_route=/ai/v1/roles-users',
    '/index.php?rest_route=/ai/v1/logs',
    '/?rest_route=/wp/v2/posts',
    '/?rest_route=/ai/v1/jobsx',
    '/?rest_route=/ai-gateway/v1/events',
    '/?p=1&jobs=/ai/v1/jobs',
    '/wp-login.php?rest_route=/ai/v1/jobs',
    '/healthz',
    '/readyz',
    '/metrics',
  ])('GET %s reaches WordPress', async (path) => {
    const before = seen.length
    const answer = await send(site.port, path)
    expect(servedBy(answer)).toBe('wordpress')
    expect(seen.length).toBe(before + 1)
    // nginx passes the request on as the client wrote it.
    expect(seen[before]!.url).toBe(path)
  })

  it('tells WordPress the client address (not one the client claims), the scheme and the Host the client used', async () => {
    const before = seen.length
    await send(site.port, '/wp-json/ai/v1/logs', { headers: { Host: `example.test:${site.port}` } })
    const { headers } = seen[before]!
    expect(headers['x-forwarded-for']).toBe(CLIENT)
    expect(headers['x-forwarded-proto']).toBe('http')
    expect(headers.host).toBe(`example.test:${site.port}`)
  })

  it('the gateway resolves the client address from what nginx forwards (TRUST_PROXY=127.0.0.1)', async () => {
    const answer = await send(site.port, '/wp-json/ai/v1/jobs', { headers: { 'X-Request-Id': 'nginx-recipe-client-address' } })
    expect(servedBy(answer)).toBe('gateway')
    const line = site.logLines.map((l) => JSON.parse(l) as { reqId?: string; req?: { remoteAddress?: string } })
      .find((l) => l.reqId === 'nginx-recipe-client-address' && l.req)
    expect(line?.req?.remoteAddress).toBe(CLIENT)
  })

  it('carries a POST body through the plain-permalink route, and the job is readable at its Location', async () => {
    const token = await bearer({ sub: '0', sid: 'nginx-recipe-visitor-plain' })
    const created = await send(site.port, '/index.php?rest_route=/ai/v1/jobs', {
      method: 'POST',
      headers: { ...token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ input: 'hello through plain permalinks' }),
    })
    expect(created.status).toBe(202)
    expect(created.json).toMatchObject({ status: 'pending' })
    const location = String(created.headers.location)
    expect(location).toBe(`${site.publicUrl}/wp-json/ai/v1/jobs/${String(created.json?.job_id)}`)

    const read = await send(site.port, new URL(location).pathname, { headers: token })
    expect(read.status).toBe(200)
    expect(read.json).toMatchObject({ job_id: created.json?.job_id, status: 'pending' })
  })

  it('streams a job\'s events through nginx as they happen, not when the stream ends', async () => {
    const token = await bearer({ sub: '0', sid: 'nginx-recipe-visitor-sse' })
    const created = await send(site.port, '/wp-json/ai/v1/jobs', {
      method: 'POST',
      headers: { ...token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ input: 'hello' }),
    })
    expect(created.status).toBe(202)
    const jobId = created.json?.job_id as number

    // Workers are not started, so the job stays pending and the stream stays open: its first
    // event can only arrive if nginx passes it on unbuffered.
    const stream = await openEvents(site.port, `/wp-json/ai/v1/jobs/${jobId}/events`, token)
    try {
      expect(stream.status).toBe(200)
      expect(stream.headers['content-type']).toMatch(/^text\/event-stream/)
      expect(stream.headers['x-request-id']).toBeTruthy()
      // Browsers ask for gzip; a compressed stream would sit in the compressor's buffer.
      expect(stream.headers['content-encoding']).toBeUndefined()
      const first = await stream.next()
      expect(first).toMatch(/^event: status\n/)
      expect(eventData(first)).toMatchObject({ job_id: jobId, status: 'pending' })

      // The same open stream then carries the cancel made through nginx, and ends after it.
      const canceled = await send(site.port, `/wp-json/ai/v1/jobs/${jobId}/cancel`, { method: 'POST', headers: token })
      expect(canceled.status).toBe(200)
      const second = await stream.next()
      expect(eventData(second)).toMatchObject({ job_id: jobId, status: 'canceled' })
      await stream.ended
    } finally {
      stream.close()
    }
  })
})

describe('docs/proxy/nginx.conf for a subdirectory install (PUBLIC_URL=…/blog)', () => {
  let site: Awaited<ReturnType<typeof stack>>
  beforeAll(async () => {
    site = await stack('blog', '/blog')
  })

  it('sends POST /blog/wp-json/ai/v1/jobs to the gateway', async () => {
    const answer = await send(site.port, '/blog/wp-json/ai/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"input":"hello"}' })
    expect(answer.status).toBe(401)
    expect(answer.json).toMatchObject({ code: 'ai_unauthorized' })
    expect(servedBy(answer)).toBe('gateway')
  })

  it.each([
    '/blog/wp-json/ai/v1/jobs/123',
    '/blog/wp-json/ai/v1/jobs/123/events',
    '/blog/?rest_route=/ai/v1/jobs',
    '/blog/index.php?rest_route=/ai/v1/jobs',
    '/blog?rest_route=/ai/v1/jobs',
  ])('GET %s reaches the gateway', async (path) => {
    const answer = await send(site.port, path)
    expect(servedBy(answer)).toBe('gateway')
    expect(answer.json).toMatchObject({ code: 'ai_unauthorized' })
  })

  it('a visitor job created under /blog is readable there', async () => {
    const token = await bearer({ sub: '0', sid: 'nginx-recipe-visitor-blog' })
    const created = await send(site.port, '/blog/?rest_route=/ai/v1/jobs', {
      method: 'POST',
      headers: { ...token, 'Content-Type': 'application/json' },
      body: JSON.stringify({ input: 'hello from the blog' }),
    })
    expect(created.status).toBe(202)
    const read = await send(site.port, `/blog/wp-json/ai/v1/jobs/${String(created.json?.job_id)}`, { headers: token })
    expect(read.status).toBe(200)
    expect(read.json).toMatchObject({ job_id: created.json?.job_id })
  })

  it.each([
    '/blog/',
    '/blog/wp-json/ai/v1/logs',
    '/blog/?rest_route=/ai/v1/logs',
    '/wp-json/ai/v1/jobs',
    '/?rest_route=/ai/v1/jobs',
  ])('GET %s reaches WordPress', async (path) => {
    const answer = await send(site.port, path)
    expect(servedBy(answer)).toBe('wordpress')
  })
})
