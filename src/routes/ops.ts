import type { FastifyInstance } from 'fastify'
import { pingDatabase } from '../db/jobs-repository.js'

/** Ops routes live outside /wp-json, so the public proxy does not expose them. */
export async function opsRoutes(app: FastifyInstance): Promise<void> {
  const gw = app.gateway

  app.get('/healthz', async () => ({ status: 'ok' }))

  app.get('/readyz', async (_request, reply) => {
    const checks: Record<string, string> = {}
    await pingDatabase(gw.handle.db).then(() => { checks.database = 'ok' }, () => { checks.database = 'unreachable' })
    await gw.store.ping().then(() => { checks.store = `ok (${gw.store.kind})` }, () => { checks.store = 'unreachable' })
    const ready = Object.values(checks).every((v) => v.startsWith('ok'))
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })

  app.get('/metrics', async (_request, reply) => {
    gw.metrics.jobsRunning.set(gw.pool.size)
    reply.header('Content-Type', gw.metrics.registry.contentType)
    return gw.metrics.registry.metrics()
  })
}
