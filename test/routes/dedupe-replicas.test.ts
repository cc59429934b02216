import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { bearer, dropMysqlDatabase, freshMysqlDatabase, REDIS_URL, testConfig } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const NAME = `gw_t2_dedupe_replicas_${RUN}`
const BASE = '/wp-json/ai/v1'

describe('the dedupe window spans replicas through Redis', () => {
  let a: FastifyInstance
  let b: FastifyInstance
  beforeAll(async () => {
    const url = await freshMysqlDatabase(NAME)
    const env = { DATABASE_URL: url, REDIS_URL, WP_TABLE_PREFIX: `wd${RUN}_` }
    a = await buildApp(testConfig(env), { logger: false, startWorkers: false })
    b = await buildApp(testConfig(env), { logger: false, startWorkers: false, migrate: false })
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await dropMysqlDatabase(NAME)
  })

  it('an identical request on another replica gets the first job back; another owner does not', async () => {
    const headers = await bearer({ sub: '11' })
    const first = await a.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'same on both replicas' } })
    expect(first.statusCode).toBe(202)
    const again = await b.inject({ method: 'POST', url: `${BASE}/jobs`, headers, payload: { input: 'same on both replicas' } })
    expect(again.statusCode).toBe(200)
    expect(again.headers['idempotent-replayed']).toBe('true')
    expect(again.json().job_id).toBe(first.json().job_id)
    const other = await b.inject({ method: 'POST', url: `${BASE}/jobs`, headers: await bearer({ sub: '12' }), payload: { input: 'same on both replicas' } })
    expect(other.statusCode).toBe(202)
    expect(other.json().job_id).not.toBe(first.json().job_id)
  })
})
