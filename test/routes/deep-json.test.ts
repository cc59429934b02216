/**
 * Bodies nested thousands of levels deep are refused while parsing (SPEC §4, §6: bad input never
 * reaches a 5xx), before a recursive JSON.stringify or canonicalisation can overflow the stack.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bearer, buildTestApp, DIALECTS, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'

describe.each(DIALECTS)('deeply nested bodies (%s)', (dialect) => {
  let t: TestApp
  beforeAll(async () => {
    t = await buildTestApp({ dialect, name: `gw_deep_json_${dialect}_${RUN}`, env: { RATE_LIMIT_MAX: '0' } })
  })
  afterAll(async () => {
    await t?.close()
  })

  const count = async () => Number((await t.app.db.db.selectFrom('ai_jobs').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n)

  it.each([
    ['metadata objects', (n: number) => `{"input":"x","metadata":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`],
    ['metadata arrays inside an object', (n: number) => `{"input":"x","metadata":{"list":${'['.repeat(n)}${']'.repeat(n)}}}`],
    ['params', (n: number) => `{"input":"x","params":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`],
  ])('refuses %s nested 10,000 levels with a 400 in the WordPress shape', async (_what, body) => {
    const before = await count()
    const res = await t.app.inject({
      method: 'POST', url: `${BASE}/jobs`, headers: { 'content-type': 'application/json', ...(await bearer({ sub: '7' })) }, payload: body(10_000),
    })
    expect(res.statusCode, res.body).toBe(400)
    expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status: 400 } })
    expect(await count()).toBe(before)
  })
})
