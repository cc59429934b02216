import { randomBytes } from 'node:crypto'
import type { Principal } from '../auth/principal.js'
import { findJob, findJobByKey, insertJob, isDuplicateKey, type JobRow } from '../db/jobs-repository.js'
import { fromDbTime, toDbTime } from '../db/time.js'
import { ApiError } from '../errors.js'
import type { CreateJobBody } from '../schemas/job.js'
import { generatedIdempotencyKey, inputHash, parseJobBody, scopedIdempotencyKey } from './job-request.js'
import { takeCreateSlot, type RateLimitInfo } from './rate-limit.js'
import { sealRequest } from './request-crypto.js'
import type { JobServices } from './services.js'

type CreateServices = Pick<JobServices, 'db' | 'store' | 'clock' | 'config' | 'requestRules' | 'pool' | 'jobEvents' | 'metrics'>

export type CreateResult =
  | { kind: 'created'; jobId: number; rateLimit: RateLimitInfo | undefined }
  | { kind: 'replayed'; row: JobRow }

/**
 * A stored key was found for this owner's key. Only the caller's own job is ever returned
 * (SPEC §5): a row of another owner under the same stored key (which owner-scoped keys make
 * impossible, short of a SHA-256 collision or a seed row holding a raw key) is refused like a
 * reused key, without showing it.
 */
function replayOrConflict(row: JobRow, ownerKey: string, hash: string): CreateResult {
  if (row.owner_key !== ownerKey || row.input_hash !== hash) {
    throw new ApiError('ai_idempotency_key_reused', 'This idempotency key was used for a different request; use a new key for new input.')
  }
  return { kind: 'replayed', row }
}

/**
 * The dedupe window's index lives in the store (Redis, shared by replicas), not in a query: one
 * key per owner and input, pointing at the newest job, expiring with the window. The row is then
 * checked, so a stale or foreign entry never returns a job it should not: same owner and input,
 * inside the window, and neither failed nor canceled (the same input again after a failure means
 * "try again").
 */
async function findDedupeHit(deps: CreateServices, key: string, ownerKey: string, hash: string, now: number): Promise<JobRow | undefined> {
  const hit = await deps.store.get(key)
  const id = hit === null ? Number.NaN : Number(hit)
  if (!Number.isSafeInteger(id)) return undefined
  const row = await findJob(deps.db.db, id)
  if (!row || row.owner_key !== ownerKey || row.input_hash !== hash) return undefined
  if (row.status === 'failed' || row.status === 'canceled') return undefined
  if (fromDbTime(row.created_at) < now - deps.config.dedupeWindowSeconds * 1000) return undefined
  return row
}

/**
 * Creates a job, or returns the existing one for a replayed key or a duplicate inside the dedupe
 * window (those never count toward the rate limit).
 */
export interface CreateRequest {
  body: CreateJobBody
  /** The `Idempotency-Key` header, when sent. */
  headerKey: string | undefined
  requestId: string
  /** The client address as TRUST_PROXY resolves it: visitors are limited per address too. */
  clientIp: string
}

export async function createJob(deps: CreateServices, principal: Principal, create: CreateRequest): Promise<CreateResult> {
  const result = await createOrReplay(deps, principal, create)
  if (result.kind === 'replayed') {
    deps.metrics.jobsReplayed.inc()
  } else {
    deps.metrics.jobsCreated.inc()
    deps.pool.wake()
    deps.jobEvents.created()
  }
  return result
}

async function createOrReplay(deps: CreateServices, principal: Principal, { body, headerKey, requestId, clientIp }: CreateRequest): Promise<CreateResult> {
  const { request, clientKey } = parseJobBody(body, deps.requestRules, headerKey)
  const hash = inputHash(request)
  const now = deps.clock.now()
  const db = deps.db.db
  const { dedupeWindowSeconds, encryptionKey } = deps.config

  const storedKey = clientKey !== undefined
    ? scopedIdempotencyKey(principal.ownerKey, clientKey)
    : generatedIdempotencyKey(principal.ownerKey, hash, request.model, now, randomBytes(16).toString('hex'))

  if (clientKey !== undefined) {
    const existing = await findJobByKey(db, storedKey)
    if (existing) return replayOrConflict(existing, principal.ownerKey, hash)
  }
  // The dedupe window merges identical requests that carry no key (SPEC §3: "instead"); a client
  // that sends a new key of its own is asking for a new job, e.g. a "regenerate" button.
  // Every new job is indexed for the window (keyed ones too); only keyless requests look it up.
  const dedupeKey = dedupeWindowSeconds > 0 ? `dedupe:${principal.ownerKey}:${hash}` : undefined
  if (dedupeKey && clientKey === undefined) {
    const recent = await findDedupeHit(deps, dedupeKey, principal.ownerKey, hash, now)
    if (recent) return { kind: 'replayed', row: recent }
  }

  const rateLimit = await takeCreateSlot(deps, principal, clientIp, now)

  const at = toDbTime(now)
  try {
    const jobId = await insertJob(db, {
      user_id: principal.userId,
      owner_key: principal.ownerKey,
      status: 'pending',
      input_hash: hash,
      request_json: sealRequest(JSON.stringify(request), encryptionKey, storedKey),
      idempotency_key: storedKey,
      model: request.model,
      request_id: requestId,
      created_at: at,
      updated_at: at,
      run_after: at,
    })
    if (dedupeKey) {
      // Not awaited: the index is a convenience, and the create should not wait on it.
      deps.store.set(dedupeKey, String(jobId), dedupeWindowSeconds * 1000).catch(() => {})
    }
    return { kind: 'created', jobId, rateLimit }
  } catch (err) {
    // Two requests with one key raced past the lookup: the loser answers like a replay.
    if (clientKey !== undefined && isDuplicateKey(err)) {
      const existing = await findJobByKey(db, storedKey)
      if (existing) return replayOrConflict(existing, principal.ownerKey, hash)
    }
    throw err
  }
}
