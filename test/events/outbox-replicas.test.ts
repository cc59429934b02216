/**
 * Events with two replicas on one MariaDB database (SPEC §10): their senders claim with SKIP
 * LOCKED side by side and every event reaches WordPress exactly once; a replica closed while its
 * try hangs gives the event back, and the other replica sends it at once. Then the companion
 * plugin's own PHP verifies an event exactly as the gateway's sender sent it.
 */
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { eventsOfJob, findEvent } from '../../src/db/events-repository.js'
import { bearer, freshDatabase, testConfig, waitFor } from '../helpers.js'
import { runCompanion } from '../support/companion-php.js'
import { adminOnly, EVENTS_SECRET, startEventsReceiver, type EventsReceiver } from '../support/events-receiver.js'
import { RUN } from '../support/run-tag.js'

const BASE = '/wp-json/ai/v1'

describe('events from two replicas on one MariaDB database', () => {
  let receiver: EventsReceiver
  let cleanup: () => Promise<void>
  let url: string
  const apps: FastifyInstance[] = []
  // Real time: the companion plugin checks the timestamp against PHP's time().
  const clock = manualClock(Date.now())

  const replica = async () => {
    const app = await buildApp(testConfig({ DATABASE_URL: url, AI_EVENTS_URL: receiver.url, AI_EVENTS_SECRET: EVENTS_SECRET }), {
      logger: false, startWorkers: false, clock, wordpress: adminOnly,
    })
    apps.push(app)
    return app
  }

  beforeAll(async () => {
    receiver = await startEventsReceiver()
    const db = await freshDatabase('mysql', `gw_events_replicas_${RUN}`)
    url = db.url
    cleanup = db.cleanup
  }, 60_000)
  afterAll(async () => {
    for (const app of apps) await app.close().catch(() => {})
    await receiver?.close()
    await cleanup?.()
  })

  const create = async (app: FastifyInstance, body: Record<string, unknown>) => {
    const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: await bearer({ sub: '5' }, { nowMs: clock.now() }), payload: body })
    expect(res.statusCode, res.body).toBe(202)
    return (res.json() as { job_id: number }).job_id
  }

  it('delivers each event once when both replicas send side by side', async () => {
    const [a, b] = [await replica(), await replica()]
    const ids: number[] = []
    for (let i = 0; i < 40; i++) ids.push(await create(i % 2 ? a : b, { input: `job ${i}`, metadata: { n: i } }))
    while ((await a.pool.runOnce()) + (await b.pool.runOnce()) > 0) { /* run them all */ }
    let sent = 0
    for (let round = 0; round < 20; round++) {
      const [x, y] = await Promise.all([a.outbox!.runOnce(), b.outbox!.runOnce()])
      sent += x + y
      if (x + y === 0) break
    }
    expect(sent).toBe(40)
    const webhookIds = receiver.received.map((r) => r.headers['webhook-id'])
    expect(webhookIds).toHaveLength(40)
    expect(new Set(webhookIds).size).toBe(40)
    expect(new Set(receiver.received.map((r) => r.json.job.job_id))).toEqual(new Set(ids))
    for (const id of ids) expect((await eventsOfJob(a.db.db, id)).map((e) => e.status)).toEqual(['delivered'])
  })

  it('a replica closed mid-try gives the event back, and the other sends it at once', async () => {
    receiver.received.length = 0
    const [a, b] = [apps[0]!, apps[1]!]
    receiver.answer((n) => (n === 0 ? 'hang' : 200))
    const id = await create(a, { input: 'slow site' })
    await a.pool.runOnce()
    const trying = a.outbox!.runOnce()
    await waitFor(() => (receiver.received.length > 0 ? true : undefined), 10_000, 'the first try')
    await a.close()
    expect(await trying).toBe(1)
    const [event] = await eventsOfJob(b.db.db, id)
    expect(event).toMatchObject({ status: 'pending', lease_token: null })
    expect(await b.outbox!.runOnce()).toBe(1)
    expect(receiver.received).toHaveLength(2)
    expect(receiver.received[1]!.headers['webhook-id']).toBe(event!.webhook_id)
    expect(await findEvent(b.db.db, Number(event!.id))).toMatchObject({ status: 'delivered' })
    receiver.answer(() => 200)
  })

  it("the companion plugin's PHP verifies an event as the sender sent it and fires ai_gateway_job_finished", async () => {
    receiver.received.length = 0
    const b = apps[1]!
    const id = await create(b, { input: 'An excerpt, please.', metadata: { post_id: 12, purpose: 'excerpt' } })
    await b.pool.runOnce()
    expect(await b.outbox!.runOnce()).toBe(1)
    const got = receiver.received[0]!
    const headers = Object.fromEntries(['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((h) => [h, String(got.headers[h])]))
    const result = await runCompanion({
      constants: { AI_EVENTS_SECRET: EVENTS_SECRET },
      input: { deliveries: [{ headers, body: got.body }, { headers, body: got.body }] },
      script: String.raw`
do_action('rest_api_init');
$route = $GLOBALS['routes']['ai-gateway/v1/events'];
$out['finished'] = array();
add_action('ai_gateway_job_finished', function ($job, $metadata, $type) {
  $GLOBALS['out']['finished'][] = array('job' => $job, 'metadata' => $metadata, 'type' => $type);
}, 10, 3);
$out['answers'] = array();
foreach ($cfg['input']['deliveries'] as $d) {
  $request = new WP_REST_Request('POST', '/ai-gateway/v1/events');
  foreach ($d['headers'] as $name => $value) { $request->set_header($name, $value); }
  $request->set_body($d['body']);
  $out['answers'][] = ai_test_response(call_user_func($route['callback'], $request));
}
`,
    })
    const answers = result.out.answers as { status: number; data: Record<string, unknown> }[]
    expect(answers.map((a) => a.status)).toEqual([200, 200])
    expect(answers[1]!.data).toMatchObject({ duplicate: true })
    const finished = result.out.finished as { job: Record<string, unknown>; metadata: unknown; type: string }[]
    expect(finished).toHaveLength(1)
    expect(finished[0]).toMatchObject({ type: 'job.succeeded', metadata: { post_id: 12, purpose: 'excerpt' }, job: { job_id: id, status: 'succeeded', user_id: 5, owner_key: 'u:5' } })
    // The id is recorded once, after the action ran.
    expect(Object.keys(result.options).filter((name) => name.startsWith('ai_gateway_event_'))).toHaveLength(1)
  })
})
