import fp from 'fastify-plugin'
import { createMetrics, type Metrics } from '../metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Prometheus metrics on a registry of this app's own. */
    metrics: Metrics
  }
}

/** The metrics registry, and the HTTP request counters every route reports to. */
export const metricsPlugin = fp(async (app) => {
  const metrics = createMetrics()
  app.decorate('metrics', metrics)
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    metrics.httpRequests.inc({ method: request.method, route, status: reply.statusCode })
    metrics.httpDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000)
  })
  app.addHook('onClose', async () => metrics.registry.clear())
}, { name: 'metrics' })
