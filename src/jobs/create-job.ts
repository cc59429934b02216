import { randomBytes } from 'node:crypto'
import type { Principal } from '../auth/principal.js'
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import { findJobByKey, findRecentDuplicate, insertJob, type JobRow } from '../db/jobs-repository.js'
import { toDbTime } from '../db/time.js'
import { ApiError } from '../errors.js'
import type { Store } from '../store/types.js'
import {
  generatedIdempotencyKey, inputHash, parseJobBody, scopedIdempotencyKey, type RequestRules,
} from './job-request.js'
import { sealRequest } from './request-crypto.js'

export interface CreateDeps {
  handle: DatabaseHandle
  store: Store
  clock: Clock
  rules: RequestRules
  rateLimitMax: number
  rateLimitWindowSeconds: number
  dedupeWindowSeconds: number
  encryptionKey: Buffer | undefined
}

export type CreateResult =
  | { kind: 'created'; jobId: number; rateLimit: RateLimitInfo | undefined }
  | { kind: 'replayed'; row: JobRow }

export interface RateLimitInfo {
  limit: number
  remaining: number
  windowSeconds: number
  resetSeconds: number
}

/** IETF httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`. */
export function rateLimitHeaders(info: RateLimitInfo): Record<string, string> {
  return {
    'RateLimit-Policy': `"create";q=${info.limit};w=${info.windowSeconds}`,
    RateLimit: `"create";r=${info.remaining};t=${info.resetSeconds}`,
  }
}

function isDuplicateKey(err: unknown): boolean {
  const e = err as { code?: string; errno?: number }
  return e?.code === 'ER_DUP_ENTRY' || e?.errno === 1062 || e?.code === 'SQLITE_CONSTRAINT_UNIQUE'
}

function replayOrConflict(row: JobRow, hash: string): CreateResult {
  if (row.input_hash !== hash) {
    throw new ApiError('ai_idempotency_key_reused', 'This idempotency key was used for a different request; use a new key for new input.')
  }
  return { kind: 'replayed', row }
}

/**
 * Creates a job, or returns the existing one for a replayed key or a duplicate inside the dedupe
 * window (those never count toward the rate limit).
 */
export async function createJob(deps: CreateDeps, principal: Principal, body: unknown, headerKey: string | undefined, requestId: string): Promise<CreateResult> {
  const { request, clientKey } = parseJobBody(body, deps.rules, headerKey)
  const hash = inputHash(request)
  const now = deps.clock.now()
  const db = deps.handle.db

  const storedKey = clientKey !== undefined
    ? scopedIdempotencyKey(principal.ownerKey, clientKey)
    : generatedIdempotencyKey(principal.ownerKey, hash, request.model, now, randomBytes(16).toString('hex'))

  if (clientKey !== undefined) {
    const existing = await findJobByKey(db, storedKey)
    if (existing) return replayOrConflict(existing, hash)
  }
  // The dedupe window merges identical requests that carry no key (SPEC §3: "instead"); a client
  // that sends a new key of its own is asking for a new job, e.g. a "regenerate" button.
  if (clientKey === undefined && deps.dedupeWindowSeconds > 0) {
    const recent = await findRecentDuplicate(db, principal.ownerKey, hash, now - deps.dedupeWindowSeconds * 1000)
    if (recent) return { kind: 'replayed', row: recent }
  }

  let rateLimit: RateLimitInfo | undefined
  if (deps.rateLimitMax > 0) {
    const windowMs = deps.rateLimitWindowSeconds * 1000
    const decision = await deps.store.consume(`rl:create:${principal.ownerKey}`, deps.rateLimitMax, windowMs, now)
    rateLimit = {
      limit: deps.rateLimitMax,
      remaining: decision.remaining,
      windowSeconds: deps.rateLimitWindowSeconds,
      resetSeconds: Math.ceil(decision.resetMs / 1000),
    }
    if (!decision.allowed) {
      const retryAfter = Math.max(1, rateLimit.resetSeconds)
      throw new ApiError('ai_rate_limited', `Too many jobs: at most ${deps.rateLimitMax} every ${deps.rateLimitWindowSeconds} seconds. Try again in ${retryAfter} s.`, {
        headers: { 'Retry-After': String(retryAfter), ...rateLimitHeaders({ ...rateLimit, resetSeconds: retryAfter }) },
      })
    }
  }

  const at = toDbTime(now)
  try {
    const jobId = await insertJob(db, {
      user_id: principal.userId,
      owner_key: principal.ownerKey,
      status: 'pending',
      input_hash: hash,
      request_json: sealRequest(JSON.stringify(request), deps.encryptionKey, storedKey),
      idempotency_key: storedKey,
      model: request.model,
      request_id: requestId,
      created_at: at,
      updated_at: at,
      run_after: at,
    })
    return { kind: 'created', jobId, rateLimit }
  } catch (err) {
    // Two requests with one key raced past the lookup: the loser answers like a replay.
    if (clientKey !== undefined && isDuplicateKey(err)) {
      const existing = await findJobByKey(db, storedKey)
      if (existing) return replayOrConflict(existing, hash)
    }
    throw err
  }
}
