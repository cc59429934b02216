/**
 * The application-password throttle through the HTTP API, on MariaDB and SQLite: failures count
 * per client address and per user the name resolves to, whatever spelling of the name is used,
 * and the throttle is checked before the cache of verified passwords. The clock is injected.
 */
import type { FastifyInstance } from 'fastify'
import { afterAll, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { DIALECTS } from '../helpers.js'
import { wordpressApps } from '../support/wordpress-app.js'
import { authVectors as v } from '../support/wordpress-fixtures.js'

const BASE = '/wp-json/ai/v1'
const NOW_MS = v.cases[0]!.now * 1000
/** The throttle's window (app-password-auth.ts: 10 failures per 5 minutes). */
const WINDOW_SECONDS = 300
const aliceApp = v.application_passwords.find((p) => p.user === 'alice')!
const bobApp = v.application_passwords.find((p) => p.user === 'bob')!
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })
/** Names WordPress resolves to bob: sanitize_user() strips tags and spaces, logins ignore case, and an e-mail is tried. */
const BOB_NAMES = ['bob', '<b>bob', ' bob', 'BOB', 'bob@example.com']

type Res = Awaited<ReturnType<FastifyInstance['inject']>>
let inputCounter = 0

describe.each(DIALECTS)('application-password throttle on %s', (dialect) => {
  const apps = wordpressApps(dialect, `throttle_${dialect}`)
  const clock = manualClock(NOW_MS)
  let app: FastifyInstance

  afterAll(() => apps.cleanup())

  async function start(): Promise<void> {
    clock.set(NOW_MS)
    app = await apps.reset({}, clock)
  }
  const createJob = (headers: Record<string, string>, remoteAddress: string) => app.inject({
    method: 'POST', url: `${BASE}/jobs`, remoteAddress,
    headers: { 'content-type': 'application/json', ...headers },
    payload: JSON.stringify({ input: `throttle test ${++inputCounter}` }),
  })
  function expectThrottled(res: Res): number {
    expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: 429 })
    expect(res.json()).toMatchObject({ code: 'ai_too_many_auth_failures', data: { status: 429 } })
    const retryAfter = Number(res.headers['retry-after'])
    expect(retryAfter).toBeGreaterThan(0)
    expect(retryAfter).toBeLessThanOrEqual(WINDOW_SECONDS)
    return retryAfter
  }
  const expectCreated = (res: Res) => expect({ status: res.statusCode, body: res.body }).toMatchObject({ status: 202 })

  it('throttles bob after ten failures spread over five spellings of his name from ten addresses, even his right password verified a moment before', async () => {
    await start()
    // His right password, verified and so cached.
    expectCreated(await createJob(basic('bob', bobApp.password), '198.51.100.1'))
    const statuses: number[] = []
    let last: Res | undefined
    for (let i = 0; i < 10; i++) {
      last = await createJob(basic(BOB_NAMES[i % BOB_NAMES.length]!, `wrong-password-${i}`), `198.51.100.${10 + i}`)
      statuses.push(last.statusCode)
    }
    expect(statuses.slice(0, 9)).toEqual(Array(9).fill(401))
    expectThrottled(last!)

    // Every spelling, with the right password, from an address that never failed…
    for (const name of BOB_NAMES) expectThrottled(await createJob(basic(name, bobApp.password), '198.51.100.200'))
    // …and the very credential cached a moment ago, from the address that used it.
    const retryAfter = expectThrottled(await createJob(basic('bob', bobApp.password), '198.51.100.1'))
    // Only bob is throttled: alice from one of those addresses goes on.
    expectCreated(await createJob(basic(aliceApp.user, aliceApp.password), '198.51.100.10'))

    clock.advance(retryAfter * 1000 + 1000)
    expectCreated(await createJob(basic('bob', bobApp.password), '198.51.100.1'))
  })

  it('counts a name no user has as the sanitised, lower-cased name', async () => {
    await start()
    const names = ['Ghost', '<i>ghost</i>', ' GHOST ', 'ghost']
    let last: Res | undefined
    for (let i = 0; i < 10; i++) last = await createJob(basic(names[i % names.length]!, 'x1'), `203.0.113.${10 + i}`)
    expectThrottled(last!)
    expectThrottled(await createJob(basic('ghost', 'x2'), '203.0.113.200'))
  })

  it('throttles an address after ten failures over different names, even a password it had verified', async () => {
    await start()
    const ip = '192.0.2.66'
    expectCreated(await createJob(basic(aliceApp.user, aliceApp.password), ip))
    const statuses: number[] = []
    for (let i = 0; i < 10; i++) statuses.push((await createJob(basic(`nobody${i}`, 'wrong'), ip)).statusCode)
    expect(statuses.slice(0, 9)).toEqual(Array(9).fill(401))
    expect(statuses[9]).toBe(429)
    // The address is throttled for every name, the cached one included…
    expectThrottled(await createJob(basic(aliceApp.user, aliceApp.password), ip))
    expectThrottled(await createJob(basic(bobApp.user, bobApp.password), ip))
    // …and the users are not, from elsewhere.
    expectCreated(await createJob(basic(aliceApp.user, aliceApp.password), '192.0.2.67'))
    expectCreated(await createJob(basic(bobApp.user, bobApp.password), '192.0.2.67'))
  })
})
