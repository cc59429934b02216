/**
 * A job an external worker completes by webhook is announced to WordPress like any other
 * (SPEC §10): its event row is written with the webhook's transaction, once, whatever the worker
 * sends again.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { findJob } from '../../src/db/jobs-repository.js'
import { signStandardWebhook, verifyWebhookSignature } from '../../src/webhook/verify-signature.js'
import { bearer, buildTestApp, DIALECTS, type TestApp } from '../helpers.js'
import { EVENTS_SECRET, startEventsReceiver, type EventsReceiver } from '../support/events-receiver.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const WHSEC = `whsec_${randomBytes(24).toString('base64')}`

describe.each(DIALECTS)('events of webhook completions (%s)', (dialect) => {
  const clock = manualClock(Math.floor(Date.now() / 1000) * 1000)
  let t: TestApp
  let app: FastifyInstance
  let receiver: EventsReceiver

  beforeAll(async () => {
    receiver = await startEventsReceiver()
    t = await buildTestApp({
      dialect, name: `gw_events_wh_${dialect}_${RUN}`, clock,
      env: { AI_WEBHOOK_SECRET: WHSEC, AI_EVENTS_URL: receiver.url, AI_EVENTS_SECRET: EVENTS_SECRET, RATE_LIMIT_MAX: '0' },
    })
    app = t.app
  })
  afterAll(async () => {
    await t?.close()
    await receiver?.close()
  })

  /** A job as an accepted dispatch leaves it: running, dispatched, attempt 1. */
  async function dispatchedJob(sub: string): Promise<{ id: number; key: string }> {
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: await bearer({ sub }, { nowMs: clock.now() }), payload: { input: 'caption this', metadata: { post_id: 7 } } })
    expect(res.statusCode).toBe(202)
    const id = res.json().job_id as number
    const at = new Date(clock.now() - 1000).toISOString().replace('T', ' ').slice(0, 23)
    await app.db.db.updateTable('ai_jobs').set({
      status: 'running', attempts: 1, dispatch_attempt: 1, lease_owner: 'worker', lease_expires_at: '2999-01-01 00:00:00.000', started_at: at, dispatched_at: at,
    }).where('id', '=', id).execute()
    return { id, key: (await findJob(app.db.db, id))!.idempotency_key }
  }

  const deliver = (body: Record<string, unknown>, id = `msg_${randomUUID()}`) => {
    const payload = JSON.stringify(body)
    const headers = signStandardWebhook({ secret: WHSEC, id, timestampSeconds: Math.floor(clock.now() / 1000), body: payload })
    return app.inject({ method: 'POST', url: `${BASE}/webhook`, payload, headers: { ...headers, 'content-type': 'application/json' } })
  }

  it('announces a webhook success once, signed, with the result and the metadata', async () => {
    const { id, key } = await dispatchedJob('71')
    const body = { job_id: id, idempotency_key: key, status: 'succeeded', result_json: { output: 'a red bicycle' }, usage: { tokens: 5, ms: 40 }, attempt: 1 }
    expect((await deliver(body, 'msg_wh_events_1')).statusCode).toBe(204)
    // The worker sends it again (its own retry, another webhook-id): the job is final already.
    expect((await deliver(body)).statusCode).toBe(204)
    await app.outbox!.runOnce()
    const mine = receiver.received.filter((e) => e.json.job.job_id === id)
    expect(mine).toHaveLength(1)
    const event = mine[0]!
    expect(event.json).toMatchObject({ type: 'job.succeeded', user_id: 71, owner_key: 'u:71', metadata: { post_id: 7 } })
    expect(event.json.job).toMatchObject({ status: 'succeeded', result: { output: 'a red bicycle' } })
    const verdict = verifyWebhookSignature({ rawBody: Buffer.from(event.body), headers: event.headers as Record<string, string>, secrets: [EVENTS_SECRET], nowMs: clock.now() })
    expect(verdict.ok).toBe(true)
  })

  it('announces a webhook failure as job.failed', async () => {
    const { id, key } = await dispatchedJob('72')
    expect((await deliver({ job_id: id, idempotency_key: key, status: 'failed', error_text: 'the model refused', attempt: 1 })).statusCode).toBe(204)
    await app.outbox!.runOnce()
    const mine = receiver.received.filter((e) => e.json.job.job_id === id)
    expect(mine.map((e) => e.json.type)).toEqual(['job.failed'])
    expect(mine[0]!.json.job).toMatchObject({ status: 'failed', error: 'the model refused' })
  })
})
