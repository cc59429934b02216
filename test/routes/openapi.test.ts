/**
 * The OpenAPI 3.1 document at /wp-json/ai/v1/openapi.json is generated from the route schemas
 * that validate requests: it must be a valid document, list every route the app serves, and say
 * what each one validates.
 */
import { compileErrors, validate } from '@readme/openapi-parser'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildTestApp, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'

/**
 * Every `METHOD /path` the app serves, read from Fastify's own routing table (printRoutes draws
 * it as a tree, four characters per level). HEAD mirrors GET and is left out.
 */
function servedRoutes(app: FastifyInstance): Set<string> {
  const routes = new Set<string>()
  const stack: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]*)\))?/.exec(line)
    if (!m) continue
    const depth = m[1]!.length / 4
    stack.length = depth
    stack.push(m[2]!)
    for (const method of (m[3] ?? '').split(', ').filter((x) => x && x !== 'HEAD')) routes.add(`${method} ${stack.join('')}`)
  }
  return routes
}

describe('GET /openapi.json', () => {
  let t: TestApp
  let app: FastifyInstance
  let doc: any
  let served: Set<string>

  beforeAll(async () => {
    t = await buildTestApp({ dialect: 'sqlite', name: `gw_openapi_${RUN}` })
    app = t.app
    const res = await app.inject({ method: 'GET', url: `${BASE}/openapi.json` })
    expect(res.statusCode).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/json/)
    doc = res.json()
    served = servedRoutes(app)
  })
  afterAll(async () => {
    await t?.close()
  })

  it('is a valid OpenAPI 3.1 document', async () => {
    expect(doc.openapi).toBe('3.1.0')
    const result = await validate(structuredClone(doc))
    expect(result.valid, result.valid ? '' : compileErrors(result)).toBe(true)
  })

  it('lists every route the gateway serves, and no other', () => {
    const documented = new Set<string>()
    for (const [path, item] of Object.entries<Record<string, unknown>>(doc.paths)) {
      for (const method of Object.keys(item)) documented.add(`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`)
    }
    expect([...documented].sort()).toEqual([...served].sort())
    // The routing table itself holds what SPEC §4 names.
    const expected = [
      `POST ${BASE}/jobs`, `GET ${BASE}/jobs`, `GET ${BASE}/jobs/:id`, `GET ${BASE}/jobs/:id/events`, `POST ${BASE}/jobs/:id/cancel`,
      `POST ${BASE}/webhook`, `GET ${BASE}/.well-known/jwks.json`, `GET ${BASE}/openapi.json`,
      `GET ${BASE}/admin/jobs`, `POST ${BASE}/admin/jobs/:id/retry`, `POST ${BASE}/admin/jobs/:id/cancel`, `GET ${BASE}/admin/usage.csv`,
      `GET ${BASE}/admin`, `GET ${BASE}/admin/stats`, `GET ${BASE}/admin/assets/app.js`, `GET ${BASE}/admin/assets/app.css`,
      `POST ${BASE}/openai/chat/completions`, `GET ${BASE}/openai/models`,
      'GET /healthz', 'GET /readyz', 'GET /metrics',
    ]
    for (const route of expected) expect(served, route).toContain(route)
  })

  it('describes the create body from the schema that validates it', () => {
    const create = doc.paths[`${BASE}/jobs`].post
    const body = create.requestBody.content['application/json'].schema
    expect(body.additionalProperties).toBe(false)
    expect(Object.keys(body.properties).sort()).toEqual(['idempotency_key', 'input', 'messages', 'metadata', 'model', 'params', 'priority'])
    expect(body.properties.params.additionalProperties).toBe(false)
    expect(create.parameters.some((p: any) => p.in === 'header' && p.name === 'idempotency-key')).toBe(true)
    expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(['200', '202', '4XX', '5XX']))
    // Who may call it: a WordPress login with its nonce, an application password, or a token.
    expect(create.security).toEqual([{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }, { publicToken: [] }])
    expect(doc.components.securitySchemes.publicToken).toMatchObject({ type: 'http', scheme: 'bearer' })
  })

  it('documents the job JSON once, with nullable fields as nullable', () => {
    const job = doc.components.schemas.Job
    expect(job.required).toEqual(expect.arrayContaining(['job_id', 'status', 'model', 'created_at', 'updated_at', 'attempts', 'result', 'error', 'usage', 'request_id']))
    expect(job.properties.error.anyOf).toEqual(expect.arrayContaining([{ type: 'null' }]))
    const read = doc.paths[`${BASE}/jobs/{id}`].get
    expect(JSON.stringify(read.responses['200'])).toContain('#/components/schemas/Job')
  })

  it('documents the OpenAI-compatible routes with OpenAI\'s error shape', () => {
    const create = doc.paths[`${BASE}/openai/chat/completions`].post
    expect(Object.keys(create.requestBody.content['application/json'].schema.properties)).toEqual(expect.arrayContaining(['model', 'messages', 'max_tokens', 'max_completion_tokens', 'stream', 'stream_options']))
    expect(Object.keys(create.responses['200'].content).sort()).toEqual(['application/json', 'text/event-stream'])
    expect(JSON.stringify(create.responses['4XX'])).toContain('#/components/schemas/OpenAiError')
    expect(doc.components.schemas.OpenAiError.properties.error.required).toEqual(expect.arrayContaining(['message', 'type', 'code', 'param']))
    expect(doc.paths[`${BASE}/openai/models`].get.security).toEqual(create.security)
  })

  it('admin routes need a WordPress login (no token), public ones nothing', () => {
    expect(doc.paths[`${BASE}/admin/jobs`].get.security).toEqual([{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }])
    expect(doc.paths[`${BASE}/.well-known/jwks.json`].get.security).toEqual([])
    expect(doc.paths[`${BASE}/admin/stats`].get.security).toEqual([{ wordpressCookie: [], wordpressNonce: [] }, { applicationPassword: [] }])
    // The page load: the logged-in cookie alone; its static files: nothing.
    expect(doc.paths[`${BASE}/admin`].get.security).toEqual([{ wordpressCookie: [] }])
    expect(doc.paths[`${BASE}/admin/assets/app.js`].get.security).toEqual([])
  })
})
