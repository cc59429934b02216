/**
 * Open streams stay cheap (SPEC §8): at most 10 per owner across replicas (429
 * ai_too_many_streams past that), and one database read per change per replica, however many
 * streams follow the job.
 */
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { bearer, DIALECTS, freshDatabase, REDIS_URL, testConfig, waitFor } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'

/** Counts the SELECTs that read one job by id. */
class SelectSpy implements KyselyPlugin {
  reads = 0
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (args.node.kind === 'SelectQueryNode' && JSON.stringify(args.node).includes('ai_jobs"')) this.reads++
    return args.node
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

/** An open SSE stream: the events seen so far, and how to close it. */
function openStream(url: string, headers: Record<string, string>) {
  const controller = new AbortController()
  const events: string[] = []
  const opened = fetch(url, { headers, signal: controller.signal }).then(async (res) => {
    if (res.status !== 200) return res
    void (async () => {
      const decoder = new TextDecoder()
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          for (const m of decoder.decode(chunk).matchAll(/^event: (\w+)$/gm)) events.push(m[1]!)
        }
      } catch { /* aborted */ }
    })()
    return res
  })
  return { opened, events, close: () => controller.abort() }
}

describe.each(DIALECTS)('open event streams (%s)', (dialect) => {
  let a: FastifyInstance
  let b: FastifyInstance
  let handle: DatabaseHandle
  let cleanup: () => Promise<void>
  let urlA: string
  let urlB: string
  const spy = new SelectSpy()
  const prefix = `wpes_${dialect}_${RUN}_`

  beforeAll(async () => {
    const db = await freshDatabase(dialect, `gw_event_streams_${dialect}_${RUN}`)
    cleanup = db.cleanup
    const env = { DATABASE_URL: db.url, WP_TABLE_PREFIX: prefix, REDIS_URL, RATE_LIMIT_MAX: '0' }
    handle = await openDatabase({ url: db.url, prefix })
    a = await buildApp(testConfig(env), { logger: false, startWorkers: false, handle: { ...handle, db: handle.db.withPlugin(spy) } })
    b = await buildApp(testConfig(env), { logger: false, startWorkers: false, migrate: false })
    for (const app of [a, b]) await app.listen({ port: 0, host: '127.0.0.1' })
    urlA = `http://127.0.0.1:${(a.server.address() as AddressInfo).port}${BASE}`
    urlB = `http://127.0.0.1:${(b.server.address() as AddressInfo).port}${BASE}`
  })
  afterAll(async () => {
    await a?.close()
    await b?.close()
    await handle?.close()
    await cleanup?.()
  })

  const createAs = async (headers: Record<string, string>) => {
    const res = await fetch(`${urlA}/jobs`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ input: `streamed ${Math.random()}` }) })
    expect(res.status).toBe(202)
    return ((await res.json()) as { job_id: number }).job_id
  }

  it('holds at most 10 streams per owner across replicas; a closed one frees its slot', async () => {
    const owner = await bearer({ sub: '31' })
    const id = await createAs(owner)
    const streams = []
    // Five on each replica: the cap is shared through Redis.
    for (let i = 0; i < 10; i++) streams.push(openStream(`${i % 2 ? urlB : urlA}/jobs/${id}/events`, owner))
    for (const s of streams) expect((await s.opened).status).toBe(200)
    for (const url of [urlA, urlB]) {
      const over = await fetch(`${url}/jobs/${id}/events`, { headers: owner })
      expect(over.status).toBe(429)
      expect(await over.json()).toMatchObject({ code: 'ai_too_many_streams', data: { status: 429 } })
    }
    // Another owner is not affected.
    const other = await bearer({ sub: '32' })
    const theirs = openStream(`${urlB}/jobs/${await createAs(other)}/events`, other)
    expect((await theirs.opened).status).toBe(200)
    theirs.close()

    streams[3]!.close()
    await waitFor(async () => {
      const again = openStream(`${urlA}/jobs/${id}/events`, owner)
      const res = await again.opened
      if (res.status === 200) {
        streams.push(again)
        return true
      }
      return undefined
    }, 10_000, 'a freed stream slot')
    for (const s of streams) s.close()
  })

  it('reads the job once per change on this replica, however many streams follow it', async () => {
    const owner = await bearer({ sub: '33' })
    const id = await createAs(owner)
    const streams = Array.from({ length: 8 }, () => openStream(`${urlA}/jobs/${id}/events`, owner))
    for (const s of streams) expect((await s.opened).status).toBe(200)
    await waitFor(() => (streams.every((s) => s.events.length >= 1) ? true : undefined), 10_000, 'the first event on every stream')

    const before = spy.reads
    // Three changes, each published the way every writer publishes them.
    for (let n = 1; n <= 3; n++) {
      await handle.db.updateTable('ai_jobs').set({ version: 1 + n }).where('id', '=', id).execute()
      a.jobEvents.changed(id)
      await waitFor(() => (streams.every((s) => s.events.length >= 1 + n) ? true : undefined), 10_000, `change ${n} on every stream`)
    }
    const reads = spy.reads - before
    // One read per change (a periodic re-read for lost events may add one); never one per stream.
    expect(reads).toBeGreaterThanOrEqual(3)
    expect(reads).toBeLessThanOrEqual(4)
    for (const s of streams) s.close()
  })
})
