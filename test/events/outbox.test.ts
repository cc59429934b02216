/**
 * Events back to WordPress (SPEC §10), end to end on both dialects: jobs run by the pool, canceled
 * or failed write their event with the transition; the sender POSTs it to a real loopback
 * receiver, signed the Standard Webhooks way (checked with the gateway's own verifier); 5xx
 * answers are retried with backoff on an injected clock, with the same webhook-id and a new
 * signature each time, until the event gives up after 24 h; the admin API lists and resends;
 * a job's events go out in order; a dead sender's claim runs out and the event is still sent.
 */
import type { FastifyInstance } from 'fastify'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { claimEvents, EVENT_RETRY_WINDOW_MS, eventsOfJob, findEvent } from '../../src/db/events-repository.js'
import { claimJobs } from '../../src/db/jobs-repository.js'
import { fromDbTime } from '../../src/db/time.js'
import { EVENT_LEASE_MS, eventBackoffMs } from '../../src/events/outbox-sender.js'
import { verifyWebhookSignature } from '../../src/webhook/verify-signature.js'
import { bearer, buildTestApp, DIALECTS, type TestApp } from '../helpers.js'
import { adminOnly, EVENTS_SECRET, startEventsReceiver, type EventsReceiver } from '../support/events-receiver.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'
const ADMIN = { authorization: 'Basic admin' }
const MODELS = JSON.stringify({ broken: { provider: 'echo', fail_status: 400 } })

let counter = 0

describe.each(DIALECTS)('events to WordPress (%s)', (dialect) => {
  let receiver: EventsReceiver
  let t: TestApp
  let app: FastifyInstance
  const clock = manualClock(Date.parse('2026-07-01T08:00:00.000Z'))

  beforeEach(async () => {
    receiver = await startEventsReceiver()
    t = await buildTestApp({
      dialect, name: `gw_events_${dialect}_${RUN}_${++counter}`, clock,
      env: { AI_EVENTS_URL: receiver.url, AI_EVENTS_SECRET: EVENTS_SECRET, AI_MODELS: MODELS },
      deps: { wordpress: adminOnly },
    })
    app = t.app
  }, 60_000)
  afterEach(async () => {
    await t?.close()
    await receiver?.close()
  })

  const create = async (body: Record<string, unknown>) => {
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: await bearer({ sub: '5' }, { nowMs: clock.now() }), payload: body })
    expect(res.statusCode, res.body).toBe(202)
    return (res.json() as { job_id: number }).job_id
  }
  const send = () => app.outbox!.runOnce()
  const verify = (i: number) => {
    const r = receiver.received[i]!
    return verifyWebhookSignature({ rawBody: Buffer.from(r.body), headers: r.headers as Record<string, string>, secrets: [EVENTS_SECRET], nowMs: clock.now() })
  }

  it('announces a finished job: signed, with the job as GET /jobs/:id shows it and its metadata', async () => {
    const id = await create({ input: 'Write an excerpt.', metadata: { post_id: 12, purpose: 'excerpt' } })
    expect(await app.pool.runOnce()).toBe(1)
    const [event] = await eventsOfJob(app.db.db, id)
    expect(event).toMatchObject({ type: 'job.succeeded', status: 'pending', attempts: 0 })
    expect(event!.webhook_id).toMatch(/^msg_[A-Za-z0-9_-]{24}$/)

    expect(await send()).toBe(1)
    expect(receiver.received).toHaveLength(1)
    expect(verify(0)).toEqual({ ok: true, scheme: 'standard', replayKey: `id:${event!.webhook_id}` })
    const shown = await app.inject({ method: 'GET', url: `${BASE}/jobs/${id}`, headers: await bearer({ sub: '5' }, { nowMs: clock.now() }) })
    expect(receiver.received[0]!.json).toEqual({ type: 'job.succeeded', user_id: 5, owner_key: 'u:5', job: shown.json(), metadata: { post_id: 12, purpose: 'excerpt' } })
    expect(receiver.received[0]!.headers['content-type']).toBe('application/json')

    expect(await findEvent(app.db.db, Number(event!.id))).toMatchObject({ status: 'delivered', attempts: 1, last_status: 200, lease_token: null })
    expect(await send()).toBe(0)
    const stats = await app.inject({ method: 'GET', url: `${BASE}/admin/stats`, headers: ADMIN })
    expect(stats.json().deliveries).toEqual({ pending: 0, failed: 0, delivered: 1 })
    const metrics = await app.inject({ method: 'GET', url: '/metrics' })
    expect(metrics.body).toContain('ai_gateway_events_total{outcome="delivered"} 1')
  })

  it('announces failed and canceled jobs, with null metadata when the request had none', async () => {
    const failed = await create({ input: 'x', model: 'broken' })
    await app.pool.runOnce()
    const canceled = await create({ input: 'y', metadata: { post_id: 3 } })
    const cancel = await app.inject({ method: 'POST', url: `${BASE}/jobs/${canceled}/cancel`, headers: await bearer({ sub: '5' }, { nowMs: clock.now() }) })
    expect(cancel.statusCode).toBe(200)
    expect(await send()).toBe(2)
    const byJob = new Map(receiver.received.map((r) => [r.json.job.job_id, r.json]))
    expect(byJob.get(failed)).toMatchObject({ type: 'job.failed', user_id: 5, metadata: null, job: { status: 'failed' } })
    expect((byJob.get(failed)!.job.error as string).length).toBeGreaterThan(0)
    expect(byJob.get(canceled)).toMatchObject({ type: 'job.canceled', metadata: { post_id: 3 }, job: { status: 'canceled', result: null } })
  })

  it('retries 5xx answers with backoff, the same webhook-id and a new signature on every try', async () => {
    receiver.answer((n) => (n < 2 ? 500 : 204))
    const id = await create({ input: 'retry me' })
    await app.pool.runOnce()
    const [event] = await eventsOfJob(app.db.db, id)

    expect(await send()).toBe(1)
    let row = (await findEvent(app.db.db, Number(event!.id)))!
    expect(row).toMatchObject({ status: 'pending', attempts: 1, last_status: 500 })
    expect(row.last_error).toContain('HTTP 500: {"code":"broken"')
    const wait = eventBackoffMs(1, 0.5)
    expect(fromDbTime(row.next_attempt_at)).toBe(clock.now() + wait)
    // Not due yet: nothing is sent.
    clock.advance(wait - 1)
    expect(await send()).toBe(0)
    clock.advance(1)
    expect(await send()).toBe(1)
    row = (await findEvent(app.db.db, Number(event!.id)))!
    expect(row).toMatchObject({ status: 'pending', attempts: 2 })
    // The second wait is twice the first (same jitter).
    expect(fromDbTime(row.next_attempt_at)).toBe(clock.now() + eventBackoffMs(2, 0.5))
    expect(eventBackoffMs(2, 0.5)).toBe(2 * wait)
    clock.set(fromDbTime(row.next_attempt_at))
    expect(await send()).toBe(1)

    expect(receiver.received).toHaveLength(3)
    const ids = receiver.received.map((r) => r.headers['webhook-id'])
    expect(new Set(ids)).toEqual(new Set([event!.webhook_id]))
    const stamps = receiver.received.map((r) => r.headers['webhook-timestamp'])
    const signatures = receiver.received.map((r) => r.headers['webhook-signature'])
    expect(new Set(stamps).size).toBe(3)
    expect(new Set(signatures).size).toBe(3)
    // The last try verifies now; each body is the same event.
    expect(verify(2).ok).toBe(true)
    expect(new Set(receiver.received.map((r) => r.body)).size).toBe(1)
    expect(await findEvent(app.db.db, Number(event!.id))).toMatchObject({ status: 'delivered', attempts: 3, last_status: 204, last_error: null })
  })

  it('gives up 24 h after the transition, and an admin resend sends it again with the same id', async () => {
    receiver.answer(() => 503)
    const start = clock.now()
    const id = await create({ input: 'nobody home' })
    await app.pool.runOnce()
    const [event] = await eventsOfJob(app.db.db, id)
    let row = event!
    let rounds = 0
    while (row.status === 'pending' && rounds++ < 200) {
      clock.set(Math.max(clock.now(), fromDbTime(row.next_attempt_at)))
      await send()
      row = (await findEvent(app.db.db, Number(event!.id)))!
    }
    expect(row.status).toBe('failed')
    expect(row.last_error).toMatch(/^gave up after \d+ tries: HTTP 503/)
    // Retried all day long, hourly at the end, and the last try was at the deadline.
    expect(receiver.received.length).toBeGreaterThan(20)
    expect(receiver.received.length).toBe(row.attempts)
    expect(clock.now()).toBe(fromDbTime(row.give_up_at))
    expect(fromDbTime(row.give_up_at) - start).toBeLessThanOrEqual(EVENT_RETRY_WINDOW_MS)
    expect(fromDbTime(row.give_up_at) - start).toBeGreaterThan(EVENT_RETRY_WINDOW_MS - 60_000)
    clock.advance(3_600_000)
    expect(await send()).toBe(0)

    const failedList = await app.inject({ method: 'GET', url: `${BASE}/admin/events?status=failed`, headers: ADMIN })
    expect(failedList.statusCode).toBe(200)
    expect(failedList.headers['cache-control']).toContain('no-store')
    expect(failedList.json()).toMatchObject({ events: [{ id: Number(event!.id), job_id: id, status: 'failed', webhook_id: event!.webhook_id, next_attempt_at: null }], next_cursor: null })
    expect((await app.inject({ method: 'GET', url: `${BASE}/admin/stats`, headers: ADMIN })).json().deliveries).toEqual({ pending: 0, failed: 1, delivered: 0 })

    receiver.answer(() => 200)
    const tries = receiver.received.length
    const resent = await app.inject({ method: 'POST', url: `${BASE}/admin/events/${event!.id}/resend`, headers: ADMIN })
    expect(resent.statusCode, resent.body).toBe(200)
    expect(resent.json()).toMatchObject({ status: 'pending', attempts: 0, last_error: null, next_attempt_at: new Date(clock.now()).toISOString() })
    expect(await send()).toBe(1)
    expect(receiver.received).toHaveLength(tries + 1)
    expect(receiver.received[tries]!.headers['webhook-id']).toBe(event!.webhook_id)
    expect(verify(tries).ok).toBe(true)
    expect(await findEvent(app.db.db, Number(event!.id))).toMatchObject({ status: 'delivered', attempts: 1 })
  })

  it('lists events with cursor pages and refuses bad input in the WordPress shape', async () => {
    for (let i = 0; i < 3; i++) await create({ input: `page ${i}` })
    await app.pool.runOnce()
    const first = await app.inject({ method: 'GET', url: `${BASE}/admin/events?limit=2&status=pending`, headers: ADMIN })
    const page1 = first.json() as { events: { id: number }[]; next_cursor: string }
    expect(page1.events).toHaveLength(2)
    const second = await app.inject({ method: 'GET', url: `${BASE}/admin/events?limit=2&status=pending&cursor=${page1.next_cursor}`, headers: ADMIN })
    const page2 = second.json() as { events: { id: number }[]; next_cursor: string | null }
    expect(page2.events).toHaveLength(1)
    expect(page2.next_cursor).toBeNull()
    const ids = [...page1.events, ...page2.events].map((e) => e.id)
    expect(ids).toEqual([...ids].sort((a, b) => b - a))
    expect(new Set(ids).size).toBe(3)

    const bad = [
      [`${BASE}/admin/events?status=sending`, 400],
      [`${BASE}/admin/events?cursor=bm9wZQ`, 400],
      [`${BASE}/admin/events?limit=0`, 400],
    ] as const
    for (const [url, status] of bad) {
      const res = await app.inject({ method: 'GET', url, headers: ADMIN })
      expect(res.statusCode, url).toBe(status)
      expect(res.json()).toMatchObject({ code: 'ai_invalid_request', data: { status } })
    }
    const missing = await app.inject({ method: 'POST', url: `${BASE}/admin/events/999999/resend`, headers: ADMIN })
    expect(missing.statusCode).toBe(404)
    expect(missing.json().code).toBe('ai_not_found')
    const visitor = await app.inject({ method: 'GET', url: `${BASE}/admin/events`, headers: await bearer({ sub: '5' }, { nowMs: clock.now() }) })
    expect(visitor.statusCode).toBe(403)
  })

  it('an admin retry that finishes again sends a second event with a new webhook-id', async () => {
    const id = await create({ input: 'twice', metadata: { post_id: 9 } })
    await app.pool.runOnce()
    await send()
    const retry = await app.inject({ method: 'POST', url: `${BASE}/admin/jobs/${id}/retry`, headers: ADMIN })
    expect(retry.statusCode).toBe(200)
    await app.pool.runOnce()
    await send()
    expect(receiver.received).toHaveLength(2)
    const [a, b] = receiver.received
    expect(a!.headers['webhook-id']).not.toBe(b!.headers['webhook-id'])
    expect(b!.json).toMatchObject({ type: 'job.succeeded', metadata: { post_id: 9 }, job: { job_id: id, status: 'succeeded' } })
    const events = await eventsOfJob(app.db.db, id)
    expect(events.map((e) => [e.status, e.job_version < events[1]!.job_version || e === events[1]])).toEqual([['delivered', true], ['delivered', true]])
  })

  it("keeps a job's events in order: a later one waits until the earlier one is settled", async () => {
    receiver.answer((n) => (n === 0 ? 500 : 200))
    const id = await create({ input: 'in order' })
    await app.pool.runOnce()
    expect(await send()).toBe(1) // the first event, refused
    const retry = await app.inject({ method: 'POST', url: `${BASE}/admin/jobs/${id}/retry`, headers: ADMIN })
    expect(retry.statusCode).toBe(200)
    await app.pool.runOnce()
    const [first, second] = await eventsOfJob(app.db.db, id)
    expect(second).toMatchObject({ status: 'pending' })
    // The second is due now, the first is not: nothing goes out.
    expect(await send()).toBe(0)
    expect(receiver.received).toHaveLength(1)
    clock.set(fromDbTime(first!.next_attempt_at) + 1)
    // The first comes due; the job has moved on since (its result was replaced), so it is settled
    // as superseded without a POST, and only then the second goes out.
    expect(await send()).toBe(1)
    expect(await findEvent(app.db.db, Number(first!.id))).toMatchObject({ status: 'failed' })
    expect((await findEvent(app.db.db, Number(first!.id)))!.last_error).toMatch(/^superseded/)
    expect(receiver.received).toHaveLength(1)
    expect(await send()).toBe(1)
    expect(receiver.received).toHaveLength(2)
    expect(receiver.received[1]!.headers['webhook-id']).toBe(second!.webhook_id)
  })

  it('announces a job the reaper fails after its last lease ran out, in the reap itself', async () => {
    const id = await create({ input: 'abandoned' })
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [claimed] = await claimJobs(app.db, { limit: 1, nowMs: clock.now(), leaseOwner: 'dead-worker', leaseMs: 1_000 })
      expect(claimed?.id, `attempt ${attempt}`).toBe(id)
      clock.advance(600_000)
      await app.reaper.runOnce()
      expect((await eventsOfJob(app.db.db, id)).length).toBe(attempt === 3 ? 1 : 0)
      // Past the job-level backoff before the next claim.
      clock.advance(600_000)
    }
    expect(await send()).toBe(1)
    expect(receiver.received[0]!.json).toMatchObject({ type: 'job.failed', job: { job_id: id, status: 'failed', attempts: 3 } })
  })

  it("a sender that died mid-send leaves its claim; the event goes out once the claim's lease ends", async () => {
    const id = await create({ input: 'crash' })
    await app.pool.runOnce()
    // A replica claims the event and dies before it records anything.
    const [claimed] = await claimEvents(app.db, { nowMs: clock.now(), limit: 10, leaseMs: EVENT_LEASE_MS, token: 'dead-replica:1' })
    expect(claimed).toMatchObject({ job_id: id, attempts: 1 })
    expect(await send()).toBe(0)
    clock.advance(EVENT_LEASE_MS - 1)
    expect(await send()).toBe(0)
    clock.advance(1)
    expect(await send()).toBe(1)
    expect(receiver.received).toHaveLength(1)
    expect(verify(0).ok).toBe(true)
    expect(await findEvent(app.db.db, Number(claimed!.id))).toMatchObject({ status: 'delivered', attempts: 2 })
  })
})
