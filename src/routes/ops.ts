import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { pingDatabase, queueDepth } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'

const QUEUE_CACHE_MS = 5_000

/** Ops routes live outside /wp-json, so the public proxy does not expose them. */
export async function opsRoutes(app: FastifyInstance): Promise<void> {
  app.get('/healthz', {
    config: { auth: 'none' },
    schema: { summary: 'The process is up', tags: ['ops'], response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
  }, async () => ({ status: 'ok' as const }))

  const Ready = Type.Object({ status: Type.String(), checks: Type.Record(Type.String(), Type.String()) })
  app.get('/readyz', {
    config: { auth: 'none' },
    schema: { summary: 'The database and the store answer', tags: ['ops'], response: { 200: Ready, 503: Ready } },
  }, async (_request, reply) => {
    const checks: Record<string, string> = {}
    await pingDatabase(app.db.db).then(() => { checks.database = 'ok' }, () => { checks.database = 'unreachable' })
    await app.store.ping().then(() => { checks.store = `ok (${app.store.kind})` }, () => { checks.store = 'unreachable' })
    const ready = Object.values(checks).every((v) => v.startsWith('ok'))
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })

  // The queue is read at most every few seconds, whatever the scrape rate (and by every replica).
  let queue: { at: number; read: Promise<Awaited<ReturnType<typeof queueDepth>>> } | undefined
  const readQueue = () => {
    const now = app.clock.now()
    if (!queue || now - queue.at >= QUEUE_CACHE_MS) {
      const read = queueDepth(app.db.db)
      queue = { at: now, read }
      read.catch(() => {
        if (queue?.read === read) queue = undefined
      })
    }
    return queue.read
  }

  app.get('/metrics', {
    config: { auth: 'none' },
    schema: { summary: 'Prometheus metrics', tags: ['ops'], response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: Type.String() } } } } },
  }, async (_request, reply) => {
    app.metrics.jobsRunning.set(app.pool.size)
    try {
      const q = await readQueue()
      app.metrics.queueDepth.set({ status: 'pending' }, q.pending)
      app.metrics.queueDepth.set({ status: 'running' }, q.running)
      app.metrics.queueOldestPendingSeconds.set(q.oldestPendingAt ? Math.max(0, (app.clock.now() - fromDbTime(q.oldestPendingAt)) / 1000) : 0)
    } catch {
      // The database is down: the rest of the metrics still answer (its outage is counted there).
    }
    reply.header('Content-Type', app.metrics.registry.contentType)
    return app.metrics.registry.metrics()
  })
}
