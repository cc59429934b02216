import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** The gateway's Prometheus metrics, on a registry of its own (one per app, so tests can build many). */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'ai_gateway_process_' })
  return {
    registry,
    httpRequests: new Counter({ name: 'ai_gateway_http_requests_total', help: 'HTTP responses by route and status', labelNames: ['method', 'route', 'status'], registers: [registry] }),
    httpDuration: new Histogram({
      name: 'ai_gateway_http_request_duration_seconds', help: 'HTTP response time', labelNames: ['method', 'route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry],
    }),
    jobsCreated: new Counter({ name: 'ai_gateway_jobs_created_total', help: 'Jobs created (replays not counted)', registers: [registry] }),
    jobsReplayed: new Counter({ name: 'ai_gateway_jobs_replayed_total', help: 'Creates answered with an existing job', registers: [registry] }),
    jobsFinished: new Counter({ name: 'ai_gateway_jobs_finished_total', help: 'Jobs written by this replica, by outcome', labelNames: ['outcome'], registers: [registry] }),
    jobsRunning: new Gauge({ name: 'ai_gateway_jobs_running', help: 'Jobs running in this replica', registers: [registry] }),
    providerDuration: new Histogram({
      name: 'ai_gateway_provider_duration_seconds', help: 'Provider call time', labelNames: ['provider', 'outcome'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120], registers: [registry],
    }),
    breakerOpen: new Gauge({ name: 'ai_gateway_breaker_open', help: '1 while a provider circuit breaker is open', labelNames: ['provider'], registers: [registry] }),
    rateLimited: new Counter({ name: 'ai_gateway_rate_limited_total', help: 'Creates refused by the rate limit', registers: [registry] }),
    storeFallbacks: new Counter({ name: 'ai_gateway_store_fallback_total', help: 'Store operations served from process memory because Redis failed', labelNames: ['operation'], registers: [registry] }),
    workerErrors: new Counter({ name: 'ai_gateway_worker_errors_total', help: 'Worker pool errors (claims, heartbeats, reaper, writes)', labelNames: ['where'], registers: [registry] }),
    dispatches: new Counter({ name: 'ai_gateway_dispatches_total', help: 'External-mode dispatches by outcome', labelNames: ['outcome'], registers: [registry] }),
    queueDepth: new Gauge({ name: 'ai_gateway_queue_depth', help: 'Jobs waiting or running, from the status index (cached a few seconds)', labelNames: ['status'], registers: [registry] }),
    queueOldestPendingSeconds: new Gauge({ name: 'ai_gateway_queue_oldest_pending_seconds', help: 'Age of the oldest pending job (cached a few seconds)', registers: [registry] }),
    tokens: new Counter({ name: 'ai_gateway_tokens_total', help: 'Tokens the providers reported, by provider, model and kind (input or output)', labelNames: ['provider', 'model', 'kind'], registers: [registry] }),
    budgetRefusals: new Counter({ name: 'ai_gateway_budget_refusals_total', help: 'Creates refused by a token budget, by scope (user, role, default, anonymous, site)', labelNames: ['scope'], registers: [registry] }),
    unmeteredCalls: new Counter({ name: 'ai_gateway_unmetered_calls_total', help: 'Provider calls that answered without reporting usage (charged their reservation)', registers: [registry] }),
    webhookVerifications: new Counter({ name: 'ai_gateway_webhook_verifications_total', help: 'Webhook signature checks by outcome', labelNames: ['outcome'], registers: [registry] }),
    events: new Counter({ name: 'ai_gateway_events_total', help: 'Tries of events to WordPress by outcome (delivered, retry, failed, superseded, gone)', labelNames: ['outcome'], registers: [registry] }),
    databaseUnavailable: new Counter({ name: 'ai_gateway_database_unavailable_total', help: 'Requests answered 503 because the database was unreachable', registers: [registry] }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
