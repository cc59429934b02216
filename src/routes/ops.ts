import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { pingDatabase } from '../db/jobs-repository.js'

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

  app.get('/metrics', {
    config: { auth: 'none' },
    schema: { summary: 'Prometheus metrics', tags: ['ops'], response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: Type.String() } } } } },
  }, async (_request, reply) => {
    app.metrics.jobsRunning.set(app.pool.size)
    reply.header('Content-Type', app.metrics.registry.contentType)
    return app.metrics.registry.metrics()
  })
}
