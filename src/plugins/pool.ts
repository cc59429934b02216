import fp from 'fastify-plugin'
import { loadSigningKey, type DispatchSigningKey } from '../dispatch/jwt.js'
import { DecisionWriter, jobLog } from '../jobs/apply-decision.js'
import { createDispatchExecutor } from '../worker/dispatch-executor.js'
import { newWorkerId, WorkerPool } from '../worker/pool.js'
import { createProviderExecutor } from '../worker/provider-executor.js'
import { Reaper } from '../worker/reaper.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The in-process worker pool (claims, runs, leases). */
    pool: WorkerPool
    /** Returns expired leases to the queue. */
    reaper: Reaper
    /** Signs dispatch JWTs in external mode and is published in the JWKS; undefined otherwise. */
    signingKey: DispatchSigningKey | undefined
  }
}

export interface PoolPluginOptions {
  /** Start claiming once the app is ready (default: when WORKER_CONCURRENCY > 0). Tests drive `runOnce()` instead. */
  start?: boolean | undefined
  pollMs?: number | undefined
  reapEveryMs?: number | undefined
}

/**
 * The worker side: the executor (a provider call in-process, or a signed dispatch to
 * AI_WORKER_URL), the decision writer, the pool and the reaper. On close the pool stops claiming,
 * lets running jobs finish within SHUTDOWN_GRACE_SECONDS and releases the rest, before the
 * database it writes to is closed.
 */
export const poolPlugin = fp<PoolPluginOptions>(async (app, options) => {
  const { config, clock, metrics, log, db, jobEvents } = app
  const signingKey = config.jwtPrivateKey
    ? loadSigningKey({
      privateKeyPem: config.jwtPrivateKey,
      ...(config.jwtKid ? { kid: config.jwtKid } : {}),
      ...(config.jwtPreviousPublicKey ? { previousPublicKeyPem: config.jwtPreviousPublicKey } : {}),
      ...(config.jwtPreviousKid ? { previousKid: config.jwtPreviousKid } : {}),
    })
    : undefined
  // The embedded default gets a generated key (src/dev-secrets.ts); anywhere else config refuses to start without one.
  if (config.workerUrl && !signingKey) throw new Error('AI_JWT_PRIVATE_KEY is required when AI_WORKER_URL is set')
  const execute = config.workerUrl && signingKey
    ? createDispatchExecutor({
      workerUrl: config.workerUrl,
      callbackUrl: `${new URL(config.publicUrl).origin}${config.routePrefix}/webhook`,
      key: signingKey,
      clock,
      timeoutMs: config.queueTimeoutSeconds * 1000,
      resultWaitMs: config.workerResultSeconds * 1000,
      encryptionKeys: config.encryptionKeys,
      onDispatch: (outcome) => metrics.dispatches.inc({ outcome }),
    })
    : createProviderExecutor({
      registry: app.providers, clock, resultMaxBytes: config.resultMaxBytes, encryptionKeys: config.encryptionKeys, defaultModel: config.defaultModel,
      onProviderCall: ({ row, provider, model, outcome, ms }) => {
        metrics.providerDuration.observe({ provider, outcome }, ms / 1000)
        // The line carries the request id of the POST that created the job.
        log.info({ ...jobLog(row), provider, model, outcome, provider_ms: ms }, 'provider call')
      },
      // Every call streams; its text reaches every replica's streams of the job (SPEC §9).
      onDelta: (jobId, index, text) => jobEvents.delta(jobId, index, text),
      onReset: (jobId) => jobEvents.reset(jobId),
    })

  const workerId = newWorkerId()
  const dispatch = config.workerUrl !== undefined
  const decisions = new DecisionWriter({
    db, clock, log, leaseOwner: workerId, maxAttempts: config.jobMaxAttempts, dispatch,
    onWritten: (jobId) => {
      metrics.jobsFinished.inc({ outcome: 'written' })
      jobEvents.changed(jobId)
    },
    budgets: app.budgets,
    results: app.results,
    events: config.eventsUrl !== undefined,
    onUsage: (usage) => {
      for (const call of usage.calls) {
        if (!call.reported) continue
        const provider = app.providers.resolve(call.model).provider.name
        metrics.tokens.inc({ provider, model: call.model, kind: 'input' }, call.input_tokens)
        metrics.tokens.inc({ provider, model: call.model, kind: 'output' }, call.output_tokens)
      }
      if (usage.unmetered > 0) metrics.unmeteredCalls.inc(usage.unmetered)
    },
  })
  const onError = (where: string) => metrics.workerErrors.inc({ where: where.split(' ')[0] })
  const pool = new WorkerPool({
    db, clock, log, execute, decisions, workerId, dispatch,
    concurrency: config.workerConcurrency,
    ownerConcurrency: config.jobOwnerConcurrency,
    leaseMs: config.jobLeaseSeconds * 1000,
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
    onError,
  })
  const reaper = new Reaper({
    db, clock, log, maxAttempts: config.jobMaxAttempts, everyMs: options.reapEveryMs ?? 5_000, budgets: app.budgets, events: config.eventsUrl !== undefined,
    onReaped: (ids) => {
      for (const id of ids) jobEvents.changed(id)
      pool.wake()
    },
    onError: (err) => {
      onError('reaper')
      log.warn({ err, where: 'reaper' }, 'worker pool error')
    },
  })
  const offWake = jobEvents.onWake(() => pool.wake())
  const offCancel = jobEvents.onCancel((jobId) => pool.abortJob(jobId, 'cancel'))

  const start = options.start !== false && config.workerConcurrency > 0
  app.addHook('onReady', async () => {
    if (!start) return
    pool.start()
    reaper.start()
  })
  app.addHook('onClose', async () => {
    offWake()
    offCancel()
    reaper.stop()
    await pool.stop(start ? config.shutdownGraceSeconds * 1000 : 0)
  })
  app.decorate('pool', pool)
  app.decorate('reaper', reaper)
  app.decorate('signingKey', signingKey)
}, { name: 'pool', dependencies: ['config', 'metrics', 'db', 'providers', 'events', 'budgets', 'results'] })
