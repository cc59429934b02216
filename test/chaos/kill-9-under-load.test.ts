import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { scopedIdempotencyKey } from '../../src/jobs/job-request.js'
import { dropMysqlDatabase, freshMysqlDatabase, signToken, waitFor } from '../helpers.js'
import { startFakeProvider, type FakeProvider } from '../support/fake-provider.js'
import { killAllGateways, startGateway, type GatewayProcess } from '../support/gateway-process.js'
import { RUN } from '../support/run-tag.js'
import { checkEndState, slowCompletions, waitUntilTerminal, type ProviderSpan } from './end-state.js'

/**
 * kill -9 of a gateway while clients are creating jobs and the pool is calling a slow provider,
 * then a restart of the same gateway. A client whose create got no answer (the connection reset,
 * or refused while the gateway was down) sends it again with the same Idempotency-Key, so a
 * create that committed unanswered is answered by the replay, never made twice. In the end every
 * job a client was given is terminal, exactly once in the table, and ran at most once per claim.
 */
const DB = `gw_chaos_kill_${RUN}`
const CLIENTS = 8
/** The whole test's bound: clients give up and the test fails past it. */
const DEADLINE_MS = 50_000

let fake: FakeProvider
let spans: ProviderSpan[]
let inspect: DatabaseHandle | undefined
let env: Record<string, string>

beforeAll(async () => {
  const provider = slowCompletions(250)
  spans = provider.spans
  fake = await startFakeProvider(provider.behavior)
  env = {
    DATABASE_URL: await freshMysqlDatabase(DB),
    AI_PROVIDER: 'openai',
    AI_PROVIDER_URL: fake.baseUrl('kill'),
    AI_DEFAULT_MODEL: 'gpt-test',
    WORKER_CONCURRENCY: '4',
    JOB_LEASE_SECONDS: '5',
    JOB_MAX_ATTEMPTS: '3',
    RATE_LIMIT_MAX: '0',
  }
}, 60_000)

afterAll(async () => {
  await killAllGateways()
  await inspect?.close()
  await fake?.close()
  await dropMysqlDatabase(DB)
})

describe('kill -9 under create load, then a restart', () => {
  it('loses no accepted create, doubles none, and runs every job to a terminal state', async () => {
    const started = Date.now()
    let gateway: GatewayProcess = await startGateway({ name: 'before the crash', env })
    const token = await signToken({ sub: '7' }, { ttlSeconds: 3600 })
    const jobOfKey = new Map<string, number>()
    const retried = new Set<string>()
    const unexpected: string[] = []
    let replays = 0

    /** POST /jobs until it is answered, always with the same key; a 202 or a 200 replay gives the job. */
    async function create(key: string, input: string): Promise<void> {
      for (;;) {
        if (Date.now() - started > DEADLINE_MS) throw new Error(`create ${key} got no answer before the deadline`)
        const target = gateway
        try {
          const res = await fetch(`${target.api}/jobs`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}`, 'idempotency-key': key },
            body: JSON.stringify({ input }),
            signal: AbortSignal.timeout(10_000),
          })
          const text = await res.text()
          if (res.status === 202 || (res.status === 200 && res.headers.get('idempotent-replayed') === 'true')) {
            const id = (JSON.parse(text) as { job_id: number }).job_id
            const known = jobOfKey.get(key)
            if (known !== undefined && known !== id) unexpected.push(`${key} answered job ${id} after job ${known}`)
            jobOfKey.set(key, id)
            if (res.status === 200) replays++
            return
          }
          unexpected.push(`${key}: ${res.status} ${text.slice(0, 200)}`)
          return
        } catch {
          // No answer: reset by the crash, or refused while no gateway listens. Same key again.
          retried.add(key)
          await new Promise((resolve) => setTimeout(resolve, 150))
        }
      }
    }

    // Clients create until the restarted gateway has taken its share, so the load spans the crash.
    let stop = false
    const clients = Array.from({ length: CLIENTS }, async (_, c) => {
      for (let n = 0; !stop; n++) {
        await create(`client-${c}-job-${n}`, `client ${c} job ${n}`)
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })

    // Under load: creates answered, and provider calls in flight, when the gateway dies.
    await waitFor(() => (jobOfKey.size >= 8 && fake.calls.filter((call) => !call.answered && !call.closedEarly).length >= 2 ? true : undefined), 30_000, 'creates answered and provider calls in flight')
    const crashed = gateway
    crashed.kill('SIGKILL')
    expect(await crashed.exited).toMatchObject({ signal: 'SIGKILL' })
    inspect = await openDatabase({ url: env.DATABASE_URL!, prefix: 'wp_' })
    const orphaned = await inspect.db.selectFrom('ai_jobs').select('id').where('status', '=', 'running').execute()
    expect(orphaned.length, 'jobs left running by the crash').toBeGreaterThanOrEqual(1)

    const beforeRestart = jobOfKey.size
    gateway = await startGateway({ name: 'after the restart', env })
    await waitFor(() => (jobOfKey.size >= beforeRestart + CLIENTS * 2 ? true : undefined), 20_000, 'creates answered by the restarted gateway')
    stop = true
    await Promise.all(clients)
    expect(unexpected).toEqual([])
    // The crash cut some creates off; they were answered on the retry, with the same key.
    expect(retried.size).toBeGreaterThanOrEqual(1)

    await waitUntilTerminal(inspect, jobOfKey.values(), Math.max(5_000, DEADLINE_MS - (Date.now() - started)))
    const rows = await checkEndState(inspect, { accepted: jobOfKey.values(), spans, exact: true })

    // One row per client key, holding that key (owner-scoped, SPEC §3): no create was made twice.
    const ids = new Set(jobOfKey.values())
    expect(ids.size).toBe(jobOfKey.size)
    for (const [key, id] of jobOfKey) {
      expect(rows.find((r) => Number(r.id) === id)?.idempotency_key, key).toBe(scopedIdempotencyKey('u:7', key))
    }
    for (const { id } of orphaned) expect(Number(rows.find((r) => Number(r.id) === Number(id))?.attempts), `orphaned job ${id} was claimed again`).toBeGreaterThanOrEqual(2)
    console.info(`kill -9: ${jobOfKey.size} jobs, ${orphaned.length} orphaned by the crash, ${retried.size} creates sent again, ${replays} answered as replays, ${spans.length} provider calls`)

    expect(gateway.alive).toBe(true)
    expect(await gateway.stop('SIGTERM')).toEqual({ code: 0, signal: null })
  }, 60_000)
})
