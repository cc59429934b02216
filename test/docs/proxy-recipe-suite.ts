/**
 * The checks every proxy recipe in docs/proxy/ must pass, run against the real gateway (buildApp
 * on SQLite, listening on loopback) and a stand-in WordPress (a plain HTTP server that says who it
 * is). Each recipe's test file only says how to start its server with the recipe.
 *
 * The client connects from 127.0.0.2, so the address a proxy forwards can be told apart from the
 * proxy's own (127.0.0.1, which is the gateway's TRUST_PROXY).
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http'
import { connect, createServer as createTcpServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { bearer, freshDatabase, testConfig } from '../helpers.js'

/** The client's own address: not the proxy's (127.0.0.1), so forwarding shows. */
const CLIENT = '127.0.0.2'
const SPOOFED = '203.0.113.7'

/** Replaces the one occurrence of `from`; a recipe that no longer has it fails loudly. */
export function replaceOnce(text: string, from: string, to: string, file: string): string {
  const at = text.indexOf(from)
  if (at < 0 || text.indexOf(from, at + 1) >= 0) throw new Error(`${file} must contain "${from}" exactly once (the test replaces it)`)
  return text.slice(0, at) + to + text.slice(at + from.length)
}

// ---------------------------------------------------------------------------------------------
// Processes and servers

export async function freePort(): Promise<number> {
  const server = createTcpServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1' })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

export interface RunningProxy {
  stop(): Promise<void>
}

/**
 * Runs a proxy in the foreground and waits until it accepts connections on 127.0.0.1:port. If it
 * exits or does not listen within 5 s, the error carries its output and `logFile`.
 */
export async function runUntilListening(command: string, args: string[], port: number, options: { logFile: string; env?: NodeJS.ProcessEnv }): Promise<RunningProxy> {
  let output = ''
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env })
  child.stdout.on('data', (chunk) => { output += String(chunk) })
  child.stderr.on('data', (chunk) => { output += String(chunk) })
  let exited: string | undefined
  const exit = new Promise<void>((resolve) => child.once('exit', (code, signal) => { exited = String(code ?? signal); resolve() }))
  child.once('error', (err) => { exited = err.message })

  const log = () => (existsSync(options.logFile) ? readFileSync(options.logFile, 'utf8') : '')
  const deadline = Date.now() + 5_000
  while (!(await accepts(port))) {
    if (exited !== undefined) throw new Error(`${command} exited (${exited}) with the recipe:\n${output}${log()}`)
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`${command} did not listen on 127.0.0.1:${port} within 5 s:\n${output}${log()}`)
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  return {
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

/** The same path and query, once dot segments are resolved as every server does. */
function sameRequest(received: string, sent: string): boolean {
  const a = new URL(received, 'http://x.invalid')
  const b = new URL(sent, 'http://x.invalid')
  return a.pathname === b.pathname && a.search === b.search
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

/** Opens an event stream through the proxy and hands out its events one by one as they arrive. */
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
            const timer = setTimeout(() => fail(new Error(`no further event through the proxy within 5 s on ${path}`)), 5_000)
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
// The suite

export interface ProxyRecipe {
  /** What the recipe is, for test titles: `docs/proxy/nginx.conf`. */
  title: string
  /** Fails the suite with a clear message when the server is not installed. */
  missing(): string | undefined
  /**
   * Starts the server with the recipe, listening on 127.0.0.1:port, in front of the gateway and
   * WordPress on these ports; `basePath` is the subdirectory of the install, or ''.
   */
  start(options: { dir: string; port: number; gatewayPort: number; wordpressPort: number; basePath: string }): Promise<RunningProxy>
}

export function describeProxyRecipe(recipe: ProxyRecipe): void {
  const tmp = mkdtempSync(join(tmpdir(), 'proxy-recipe-'))
  const seen: SeenByWordPress[] = []
  const stops: Array<() => Promise<void>> = []
  let wordpressPort = 0

  beforeAll(async () => {
    const missing = recipe.missing()
    if (missing) throw new Error(missing)
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
    const port = await freePort()
    const publicUrl = `http://127.0.0.1:${port}${basePath}`
    const gateway = await startGateway(name, { TRUST_PROXY: '127.0.0.1', PUBLIC_URL: publicUrl }, logLines)
    stops.push(async () => { await gateway.app.close(); await gateway.cleanup() })
    const dir = join(tmp, name)
    mkdirSync(dir)
    const proxy = await recipe.start({ dir, port, gatewayPort: gateway.port, wordpressPort, basePath })
    stops.push(proxy.stop)
    return { port, publicUrl, logLines }
  }

  describe(`${recipe.title} at the site root`, () => {
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
      // The proxy passes the request on as the client wrote it (dot segments aside).
      expect(sameRequest(seen[before]!.url, path)).toBe(true)
    })

    it('tells WordPress the client address (not one the client claims), the scheme and the Host the client used', async () => {
      const before = seen.length
      const answer = await send(site.port, '/wp-json/ai/v1/logs', { headers: { Host: `example.test:${site.port}` } })
      expect(servedBy(answer)).toBe('wordpress')
      const { headers } = seen[before]!
      expect(headers['x-forwarded-for']).toBe(CLIENT)
      expect(headers['x-forwarded-proto']).toBe('http')
      expect(headers.host).toBe(`example.test:${site.port}`)
    })

    it('the gateway resolves the client address from what the proxy forwards (TRUST_PROXY=127.0.0.1)', async () => {
      const answer = await send(site.port, '/wp-json/ai/v1/jobs', { headers: { 'X-Request-Id': 'proxy-recipe-client-address' } })
      expect(servedBy(answer)).toBe('gateway')
      const line = site.logLines.map((l) => JSON.parse(l) as { request_id?: string; req?: { remoteAddress?: string } })
        .find((l) => l.request_id === 'proxy-recipe-client-address' && l.req)
      expect(line?.req?.remoteAddress).toBe(CLIENT)
    })

    it('carries a POST body through the plain-permalink route, and the job is readable at its Location', async () => {
      const token = await bearer({ sub: '0', sid: 'proxy-recipe-visitor-plain' })
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

    it('streams a job\'s events through the proxy as they happen, not when the stream ends', async () => {
      const token = await bearer({ sub: '0', sid: 'proxy-recipe-visitor-sse' })
      const created = await send(site.port, '/wp-json/ai/v1/jobs', {
        method: 'POST',
        headers: { ...token, 'Content-Type': 'application/json' },
        body: JSON.stringify({ input: 'hello' }),
      })
      expect(created.status).toBe(202)
      const jobId = created.json?.job_id as number

      // Workers are not started, so the job stays pending and the stream stays open: its first
      // event can only arrive if the proxy passes it on unbuffered.
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

        // The same open stream then carries the cancel made through the proxy, and ends after it.
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

  describe(`${recipe.title} for a subdirectory install (PUBLIC_URL=…/blog)`, () => {
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
      const token = await bearer({ sub: '0', sid: 'proxy-recipe-visitor-blog' })
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
}
