import { createHash } from 'node:crypto'
import { completeFromWebhook as completeFromWebhookRow, findJob, type JobRow } from '../db/jobs-repository.js'
import { TERMINAL_STATUSES } from '../db/schema.js'
import { fromDbTime } from '../db/time.js'
import { ApiError } from '../errors.js'
import type { WebhookBody } from '../schemas/webhook.js'
import type { JobServices } from './services.js'

/** The store's replay guard: a delivery seen in the last 10 minutes is acknowledged at once (SPEC §5). */
const REPLAY_TTL_MS = 10 * 60_000
/** `error_text` is a TEXT column: 65,535 bytes. */
export const ERROR_TEXT_MAX_BYTES = 65_535

function bad(field: string, reason: string): ApiError {
  return new ApiError('ai_invalid_request', `${field}: ${reason}`, { details: { field, reason } })
}

/**
 * What the body schema cannot say: `result_json` exactly when succeeded, `error_text` exactly
 * when failed, and an `error_text` the column can hold. A worker told `400` learns its delivery
 * can never be stored, and the job stays as it was.
 */
function checkBody(body: WebhookBody): void {
  const hasResult = Object.hasOwn(body, 'result_json') && body.result_json !== undefined
  const hasError = body.error_text !== undefined && body.error_text !== null
  if (body.status === 'succeeded' && !hasResult) throw bad('result_json', 'is required when status is succeeded')
  if (body.status === 'succeeded' && hasError) throw bad('error_text', 'is only allowed when status is failed')
  if (body.status === 'failed' && (typeof body.error_text !== 'string' || body.error_text === '')) throw bad('error_text', 'is required when status is failed')
  if (body.status === 'failed' && hasResult) throw bad('result_json', 'is only allowed when status is succeeded')
  if (typeof body.error_text === 'string' && Buffer.byteLength(body.error_text) > ERROR_TEXT_MAX_BYTES) {
    throw bad('error_text', `must be at most ${ERROR_TEXT_MAX_BYTES} bytes`)
  }
}

/**
 * From this dispatch to its webhook. The claim that sent it set `started_at`; `dispatched_at` is
 * written once the worker's 2xx is seen, which a fast worker's webhook can beat, and an older
 * `dispatched_at` (from an earlier dispatch) must not count.
 */
function workerMsOf(row: JobRow, nowMs: number): number | null {
  const started = row.started_at ? fromDbTime(row.started_at) : undefined
  const dispatched = row.dispatched_at ? fromDbTime(row.dispatched_at) : undefined
  const from = dispatched !== undefined && (started === undefined || dispatched >= started) ? dispatched : started
  // INT UNSIGNED: a delivery weeks late (past 2^32 ms) is still stored, with the longest time the column holds.
  return from === undefined ? null : Math.min(UINT32_MAX, Math.max(0, Math.round(nowMs - from)))
}

const UINT32_MAX = 4_294_967_295

/**
 * A verified webhook delivery (SPEC §5), after its signature (403) and its body's schema (400):
 * 404 for an unknown job, 400 for a key that is not the job's, then the job moves to its
 * terminal state unless the delivery is a replay, the job is terminal already, or the delivery
 * is for an older dispatch (all acknowledged and ignored). Resolves to true when the job changed.
 */
export async function completeFromWebhook(services: Pick<JobServices, 'db' | 'store' | 'clock' | 'config' | 'jobEvents' | 'budgets' | 'metrics' | 'results'>, replayKey: string, body: WebhookBody): Promise<boolean> {
  checkBody(body)
  const { db, store, clock, config } = services
  const row = await findJob(db.db, body.job_id)
  if (!row) throw new ApiError('ai_not_found', 'No job with that job_id.')
  if (row.idempotency_key !== body.idempotency_key) throw bad('idempotency_key', 'is not the key of that job')

  const guardKey = `webhook:seen:${replayKey}`
  if (await store.get(guardKey)) return false

  const now = clock.now()
  let resultJson = body.status === 'succeeded' ? JSON.stringify(body.result_json) : null
  let errorText = body.status === 'failed' ? body.error_text! : null
  let status = body.status
  if (resultJson !== null && Buffer.byteLength(resultJson) > config.resultMaxBytes) {
    status = 'failed'
    errorText = `the worker's result is ${Buffer.byteLength(resultJson)} bytes, over RESULT_MAX_BYTES (${config.resultMaxBytes}); it was not stored`
    resultJson = null
  }
  // The fenced update leaves a terminal job, and a delivery for an older dispatch (a newer one is
  // under way), as they are; the receipt is kept either way, so this delivery never completes
  // the job later, not even after an admin retry.
  // A worker reports output tokens only (`usage.tokens`); one that reports none is charged the
  // job's reservation, as any call answered without usage (SPEC §8).
  const reported = body.usage?.tokens
  if (reported === undefined) services.metrics.unmeteredCalls.inc()
  // A large result is durable in the store before the transaction that names it; a transaction
  // that then changes nothing (or fails) leaves no file behind.
  // A job already terminal stays as it is: nothing to store for it.
  const placed = TERMINAL_STATUSES.includes(row.status) ? { resultJson, resultRef: null } : await services.results.place(row, resultJson)
  let completed: Awaited<ReturnType<typeof completeFromWebhookRow>>
  try {
    completed = await completeFromWebhookRow(db.db, {
      jobId: row.id,
      attempt: body.attempt,
      receiptKey: createHash('sha256').update(replayKey).digest('hex'),
      outcome: {
        status, ...placed, errorText,
        providerMs: body.usage?.ms ?? null,
        outputTokens: body.usage?.tokens ?? null,
        workerMs: workerMsOf(row, now),
      },
      nowMs: now,
      events: config.eventsUrl !== undefined,
      ...(services.budgets ? { settle: { dialect: db.dialect, tokens: (reserved: number) => reported ?? reserved, unmetered: reported === undefined } } : {}),
    })
  } catch (err) {
    await services.results.discardUnlessNamed(placed.resultRef, async () => (await findJob(db.db, row.id))?.result_ref, { job_id: row.id })
    throw err
  }
  const { outcome, settled } = completed
  // Nothing changed: no row names the new file. Changed over an older stored result: that one is named no more.
  if (outcome !== 'changed') await services.results.discard(placed.resultRef, `webhook ${outcome}`, { job_id: row.id })
  if (outcome === 'changed' && row.result_ref && row.result_ref !== placed.resultRef) await services.results.discard(row.result_ref, 'replaced', { job_id: row.id })
  if (settled) await services.budgets?.settled([settled])
  // Recorded only after the commit, so a delivery that failed half-way can be sent again.
  await store.set(guardKey, String(row.id), REPLAY_TTL_MS)
  if (outcome === 'changed') services.jobEvents.changed(row.id)
  return outcome === 'changed'
}
