/**
 * SPEC §4 hardening: `X-Content-Type-Options: nosniff` on every answer, `Cache-Control: private,
 * no-store` on lists and admin answers, a stalled request body dropped with 408, and a JSON
 * content type with an empty body on cancel accepted.
 */
import { connect, type AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { BODY_TIMEOUT_MS } from '../../src/plugins/http.js'
import { bearer, freshDatabase, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const STALL_MS = 400

describe('HTTP hardening', () => {
  let app: FastifyInstance
  let cleanup: () => Promise<void>
  let port: number
  let owner: Record<string, string>

  beforeAll(async () => {
    const db = await freshDatabase('sqlite', `gw_hardening_${RUN}`)
    cleanup = db.cleanup
    app = await buildApp(testConfig({ DATABASE_URL: db.url }), { logger: false, startWorkers: false, bodyTimeoutMs: STALL_MS })
    await app.listen({ port: 0, host: '127.0.0.1' })
    port = (app.server.address() as AddressInfo).port
    owner = await bearer({ sub: '41' })
  })
  afterAll(async () => {
    await app?.close()
    await cleanup?.()
  })

  const create = () => app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...owner, 'content-type': 'application/json' }, payload: { input: `hardening ${Math.random()}` } })

  it('sends nosniff on every kind of answer', async () => {
    const created = await create()
    const id = created.json().job_id as number
    const read = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: owner })
    const answers = [
      created,
      read,
      await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: { ...owner, 'if-none-match': read.headers.etag as string } }),
      await app.inject({ method: 'GET', url: `${BASE}/jobs`, headers: owner }),
      await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}` }),
      await app.inject({ method: 'GET', url: `${BASE}/jobs/999999`, headers: owner }),
      await app.inject({ method: 'GET', url: `${BASE}/no-such-route` }),
      await app.inject({ method: 'GET', url: `${BASE}/jobs/%E0%A4%A` }),
      await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { ...owner, 'content-type': 'application/json' }, payload: '{bad' }),
      await app.inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: owner }),
      await app.inject({ method: 'GET', url: '/healthz' }),
      await app.inject({ method: 'GET', url: `${BASE}/.well-known/jwks.json` }),
      await app.inject({ method: 'GET', url: `${BASE}/openapi.json` }),
    ]
    expect(answers.map((a) => a.statusCode)).toEqual([202, 200, 304, 200, 401, 404, 404, 400, 400, 403, 200, 200, 200])
    for (const a of answers) expect(a.headers['x-content-type-options'], `${a.statusCode} ${a.body.slice(0, 60)}`).toBe('nosniff')

    const stream = await fetch(`http://127.0.0.1:${port}${BASE}/jobs/${id}/events`, { headers: owner })
    expect(stream.headers.get('x-content-type-options')).toBe('nosniff')
    await stream.body?.cancel()
  })

  it('marks lists and admin answers private, no-store, errors included', async () => {
    const lists = [
      await app.inject({ method: 'GET', url: `${BASE}/jobs`, headers: owner }),
      await app.inject({ method: 'GET', url: `${BASE}/jobs?limit=500`, headers: owner }),
      await app.inject({ method: 'GET', url: `${BASE}/admin/jobs`, headers: owner }),
      await app.inject({ method: 'GET', url: `${BASE}/admin/usage.csv`, headers: owner }),
      await app.inject({ method: 'POST', url: `${BASE}/admin/jobs/1/retry`, headers: owner }),
    ]
    expect(lists.map((a) => a.statusCode)).toEqual([200, 400, 403, 403, 403])
    for (const a of lists) expect(a.headers['cache-control']).toBe('private, no-store')
    // A single job stays revalidatable (its ETag), not no-store.
    const id = (await create()).json().job_id as number
    expect((await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: owner })).headers['cache-control']).toBe('private, max-age=0')
  })

  it('drops a request body that stalls with 408 in the WordPress shape and closes the connection', async () => {
    expect(BODY_TIMEOUT_MS).toBe(10_000)
    const count = async () => Number((await app.db.db.selectFrom('ai_jobs').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)
    const before = await count()
    const started = Date.now()
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`POST ${BASE}/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${owner.authorization}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"input":"half`)
      })
      let text = ''
      socket.on('data', (chunk) => { text += chunk.toString() })
      socket.on('close', () => resolve(text))
      socket.on('error', reject)
      setTimeout(() => { socket.destroy(); reject(new Error('the connection stayed open')) }, 15_000).unref()
    })
    const elapsed = Date.now() - started
    expect(answer).toMatch(/^HTTP\/1\.1 408/)
    expect(answer).toMatch(/connection: close/i)
    expect(answer).toContain('"code":"ai_request_timeout"')
    expect(answer).toContain('"status":408')
    expect(elapsed).toBeGreaterThanOrEqual(STALL_MS - 50)
    // Nothing was created from half a body.
    expect(await count()).toBe(before)
  })

  it('a body that arrives in time, however slowly, is read', async () => {
    const answer = await new Promise<string>((resolve, reject) => {
      const body = '{"input":"slow but in time"}'
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(`POST ${BASE}/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${owner.authorization}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.slice(0, 10)}`)
        setTimeout(() => socket.write(body.slice(10)), STALL_MS / 3)
      })
      let text = ''
      socket.on('data', (chunk) => { text += chunk.toString() })
      socket.on('close', () => resolve(text))
      socket.on('error', reject)
    })
    expect(answer).toMatch(/^HTTP\/1\.1 202/)
  })

  it('accepts a cancel with a JSON content type and an empty body', async () => {
    const id = (await create()).json().job_id as number
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs/${id}/cancel`, headers: { ...owner, 'content-type': 'application/json' }, payload: '' })
    expect(res.statusCode, res.body).toBe(200)
    expect(res.json().status).toBe('canceled')
    const other = (await create()).json().job_id as number
    expect((await app.inject({ method: 'POST', url: `${BASE}/jobs/${other}/cancel`, headers: { ...owner, 'content-type': 'application/json' }, payload: '{}' })).statusCode).toBe(200)
  })
})
