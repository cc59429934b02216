import { randomBytes } from 'node:crypto'
import type { Principal } from '../auth/principal.js'
import { budgetExhausted, estimateInputTokens } from '../budgets/budgets.js'
import { findJobByKey, insertJobs, isDuplicateKey, type JobRow, type NewJobRow } from '../db/jobs-repository.js'
import { JOB_PRIORITY } from '../db/schema.js'
import { fromDbTime, toDbTime } from '../db/time.js'
import { ApiError } from '../errors.js'
import type { CreateJobBody } from '../schemas/job.js'
import type { CreateAdmission, CreateAdmissionResult } from '../store/types.js'
import { generatedIdempotencyKey, inputHash, parseJobBody, scopedIdempotencyKey } from './job-request.js'
import { createWindows, rateLimited, type RateLimitInfo } from './rate-limit.js'
import { sealRequest } from './request-crypto.js'
import type { JobServices } from './services.js'

type CreateServices = Pick<JobServices, 'db' | 'createBatcher' | 'store' | 'clock' | 'config' | 'requestRules' | 'pool' | 'jobEvents' | 'metrics' | 'budgets'>

export type CreateResult =
  | { kind: 'created'; jobId: number; rateLimit: RateLimitInfo | undefined }
  | { kind: 'replayed'; row: JobRow }

export interface CreateRequest {
  body: CreateJobBody
  /** The `Idempotency-Key` header, when sent. */
  headerKey: string | undefined
  requestId: string
  /** The client address as TRUST_PROXY resolves it: visitors are limited per address too. */
  clientIp: string
}

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
 * The dedupe window's index lives in the store (Redis, shared by replicas): one entry per owner
 * and input, holding the stored idempotency key of the newest job, expiring with the window. The
 * row it names is checked, so a stale or foreign entry never returns a job it should not: same
 * owner and input, inside the window, and neither failed nor canceled (the same input again after
 * a failure means "try again"). A row not committed yet is no hit either.
 */
async function dedupeHit(deps: CreateServices, storedKey: string, ownerKey: string, hash: string, now: number): Promise<JobRow | undefined> {
  const row = await findJobByKey(deps.db.db, storedKey)
  if (!row || row.owner_key !== ownerKey || row.input_hash !== hash) return undefined
  if (row.status === 'failed' || row.status === 'canceled') return undefined
  if (fromDbTime(row.created_at) < now - deps.config.dedupeWindowSeconds * 1000) return undefined
  return row
}

/** Holds AI_CREATE_CAPABILITY (SPEC §5), asking past the caches before refusing. */
export async function mayCreate(principal: Principal): Promise<void> {
  if (principal.canCreate) return
  // Caches may delay a revocation, never a grant: a capability just given is looked up again.
  const fresh = principal.recheck ? await principal.recheck() : principal
  if (!fresh.canCreate) throw new ApiError('ai_forbidden', 'You are not allowed to create AI jobs.')
}

/**
 * Creates a job, or returns the existing one for a replayed key or a duplicate inside the dedupe
 * window (those never count toward the rate limit).
 */
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

/**
 * The create path costs one store round trip (the dedupe lookup and every rate window, in one
 * script) and a share of one multi-row INSERT; a keyed create also looks its key up first.
 */
async function createOrReplay(deps: CreateServices, principal: Principal, { body, headerKey, requestId, clientIp }: CreateRequest): Promise<CreateResult> {
  const { request, clientKey } = parseJobBody(body, deps.requestRules, headerKey)
  const hash = inputHash(request)
  const now = deps.clock.now()
  const { config, store } = deps
  const storedKey = clientKey !== undefined
    ? scopedIdempotencyKey(principal.ownerKey, clientKey)
    : generatedIdempotencyKey(principal.ownerKey, hash, request.model, now, randomBytes(16).toString('hex'))

  if (clientKey !== undefined) {
    const existing = await findJobByKey(deps.db.db, storedKey)
    if (existing) return replayOrConflict(existing, principal.ownerKey, hash)
  }

  // The dedupe window merges identical requests that carry no key (SPEC §3: "instead"); a client
  // that sends a new key of its own is asking for a new job, e.g. a "regenerate" button. Every
  // new job is indexed for the window (keyed ones too); only keyless requests look it up.
  const dedupe: CreateAdmission['dedupe'] = config.dedupeWindowSeconds > 0
    ? { key: `dedupe:${principal.ownerKey}:${hash}`, value: storedKey, ttlMs: config.dedupeWindowSeconds * 1000, mode: clientKey === undefined ? 'claim' : 'set' }
    : undefined
  const windows = createWindows(config, principal, clientIp)
  // Budgets (SPEC §8): the worst case is reserved on every counter that limits this owner.
  const { budgets } = deps
  const counters = budgets?.countersFor(principal, now) ?? []
  const reserve = counters.length > 0 ? estimateInputTokens(request) + (request.params.max_tokens ?? deps.requestRules.maxTokensFor(request.model)) : 0
  const admission: CreateAdmission = {
    windows: windows.map(({ key, limit }) => ({ key, limit })),
    windowMs: config.rateLimitWindowSeconds * 1000,
    nowMs: now,
    member: `${storedKey}:${requestId}`,
    ...(dedupe ? { dedupe } : {}),
    ...(counters.length > 0 ? { budgets: { amount: reserve, counters: counters.map(({ key, limit }) => ({ key, limit })) } } : {}),
  }
  // Without Redis, budgets are checked in the database under a lock instead (never looser);
  // the rate windows and the dedupe entry then live in this process's memory.
  let checkInDatabase = false
  const admit = async (a: CreateAdmission): Promise<CreateAdmissionResult> => {
    if (checkInDatabase || !a.budgets) return store.admitCreate(checkInDatabase ? { ...a, budgets: undefined } as CreateAdmission : a)
    await budgets!.forgetStale().catch(() => {})
    for (let round = 0; ; round++) {
      let answer: CreateAdmissionResult
      try {
        answer = await store.admitCreate(a)
      } catch {
        checkInDatabase = true
        return store.admitCreate({ ...a, budgets: undefined } as CreateAdmission)
      }
      if (answer.kind !== 'rebuild' || round >= 3) return answer
      await budgets!.rebuild(counters, principal.ownerKey)
    }
  }
  let admitted = await admit(admission)
  if (admitted.kind === 'existing') {
    const recent = await dedupeHit(deps, admitted.value, principal.ownerKey, hash, now)
    if (recent) return { kind: 'replayed', row: recent }
    // A stale entry (a failed job, one past the window, one whose insert never landed): this
    // create takes its place.
    admitted = await admit({ ...admission, dedupe: { ...dedupe!, mode: 'set' } })
  }
  if (admitted.kind === 'refused') {
    deps.metrics.rateLimited.inc()
    throw rateLimited(windows[admitted.index]!, config.rateLimitWindowSeconds, admitted.resetMs)
  }
  if (admitted.kind === 'over-budget') {
    const ref = counters[admitted.index]!
    budgets!.refused(ref)
    throw budgetExhausted(budgets!.standing(ref, admitted.counter), now)
  }
  if (admitted.kind !== 'admitted') throw new Error(`the store answered ${admitted.kind} to a create`)
  const ownerWindow = config.rateLimitMax > 0 ? admitted.windows[admitted.windows.length - 1] : undefined
  const rateLimit: RateLimitInfo | undefined = ownerWindow && {
    limit: config.rateLimitMax, remaining: ownerWindow.remaining, windowSeconds: config.rateLimitWindowSeconds, resetSeconds: Math.ceil(ownerWindow.resetMs / 1000),
  }

  const at = toDbTime(now)
  const row: NewJobRow = {
    user_id: principal.userId,
    owner_key: principal.ownerKey,
    status: 'pending',
    input_hash: hash,
    request_json: sealRequest(JSON.stringify(request), config.encryptionKeys, storedKey),
    idempotency_key: storedKey,
    model: request.model,
    request_id: requestId,
    created_at: at,
    updated_at: at,
    run_after: at,
    reserved_tokens: reserve,
    priority: request.priority === 'bulk' ? JOB_PRIORITY.bulk : JOB_PRIORITY.interactive,
  }
  try {
    const jobId = checkInDatabase
      ? await budgets!.insertChecked(counters, principal.ownerKey, reserve, async (trx) => {
        const ids = await insertJobs({ ...deps.db, db: trx }, [row])
        return ids.get(storedKey)!
      })
      : await deps.createBatcher.insert(row)
    return { kind: 'created', jobId, rateLimit }
  } catch (err) {
    // No job came of it: the hits and the reservation are given back, and the dedupe entry, if
    // still this create's.
    await store.releaseCreate(admission.windows.map((w) => w.key), admission.member, dedupe && { key: dedupe.key, value: storedKey }).catch(() => {})
    if (reserve > 0 && !checkInDatabase) await budgets?.adjustReserved(principal.ownerKey, now, -reserve).catch(() => {})
    // Two requests with one key raced past the lookup: the loser answers like a replay.
    if (clientKey !== undefined && isDuplicateKey(err)) {
      const existing = await findJobByKey(deps.db.db, storedKey)
      if (existing) return replayOrConflict(existing, principal.ownerKey, hash)
    }
    throw err
  }
}
