import fp from 'fastify-plugin'
import { OutboxSender } from '../events/outbox-sender.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Sends the events outbox to AI_EVENTS_URL (SPEC §10); undefined while events are off. */
    outbox: OutboxSender | undefined
  }
}

export interface OutboxPluginOptions {
  /** Start sending once the app is ready (default true). Tests drive `runOnce()` instead. */
  start?: boolean | undefined
  pollMs?: number | undefined
}

/** Coalesces the wake-ups job changes cause: one claim per this many ms, however busy the queue. */
const WAKE_COALESCE_MS = 100

/**
 * The events sender, beside the pool. It runs on every replica that has AI_EVENTS_URL, an
 * API-only one (WORKER_CONCURRENCY=0) included: SKIP LOCKED gives each event to one of them, and
 * events keep flowing while the workers are elsewhere. Any job change wakes it (a terminal one
 * has just committed its event); a poll covers retries coming due. On close it stops before the
 * database closes, giving back the events in flight.
 */
export const outboxPlugin = fp<OutboxPluginOptions>(async (app, options) => {
  const { config } = app
  if (!config.eventsUrl || !config.eventsSecret) {
    app.decorate('outbox', undefined)
    return
  }
  const sender = new OutboxSender({
    db: app.db, clock: app.clock, log: app.log, url: config.eventsUrl, secret: config.eventsSecret, encryptionKeys: config.encryptionKeys, resultStore: app.results.store,
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
    onOutcome: (outcome) => app.metrics.events.inc({ outcome }),
  })
  let timer: NodeJS.Timeout | undefined
  const off = app.jobEvents.onChanged(() => {
    if (timer) return
    timer = setTimeout(() => {
      timer = undefined
      sender.wake()
    }, WAKE_COALESCE_MS)
    timer.unref()
  })
  app.addHook('onReady', async () => {
    if (options.start !== false) sender.start()
  })
  app.addHook('onClose', async () => {
    off()
    clearTimeout(timer)
    await sender.stop()
  })
  app.decorate('outbox', sender)
}, { name: 'outbox', dependencies: ['config', 'metrics', 'db', 'events', 'results'] })
