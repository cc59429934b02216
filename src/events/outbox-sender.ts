import { randomBytes } from 'node:crypto'
import { request as httpRequest, type Dispatcher } from 'undici'
import type { Clock } from '../clock.js'
import type { DatabaseHandle } from '../db/database.js'
import { claimEvents, pruneDelivered, settleTry, type EventRow, type TryOutcome } from '../db/events-repository.js'
import { findJob, type JobRow } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { toError } from '../errors.js'
import { toJobResponse } from '../jobs/job-response.js'
import { loadResult } from '../results/large-results.js'
import type { ResultStore } from '../results/result-store.js'
import { openRequest, type Keyring } from '../jobs/request-crypto.js'
import type { Log } from '../logger.js'
import { signStandardWebhook } from '../webhook/verify-signature.js'

/** One POST, connect to last byte (SPEC §10 leaves it to us; WordPress answers in well under this). */
export const EVENT_TIMEOUT_MS = 10_000
/** How long a claimed try owns its row: well past the timeout, then another replica may send it. */
export const EVENT_LEASE_MS = 60_000
/** The first retry waits about this long, doubling per failed try… */
export const EVENT_BACKOFF_BASE_MS = 10_000
/** …up to an hour between tries. */
export const EVENT_BACKOFF_CAP_MS = 3_600_000
/** Delivered events are kept a week (the admin page lists them), then pruned. */
export const DELIVERED_RETENTION_MS = 7 * 86_400_000
/** Of a receiver's error answer, this much is kept in `last_error`. */
const ERROR_BODY_CHARS = 300

export type EventOutcome = 'delivered' | 'retry' | 'failed' | 'superseded' | 'gone'

export interface OutboxSenderOptions {
  db: DatabaseHandle
  clock: Clock
  log: Log
  /** AI_EVENTS_URL. */
  url: string
  /** AI_EVENTS_SECRET (`whsec_…`): never logged. */
  secret: string
  /** AI_ENCRYPTION_KEY: the job's metadata is read from its (maybe sealed) request. */
  encryptionKeys: Keyring | undefined
  timeoutMs?: number
  leaseMs?: number
  /** Events claimed per round, sent side by side (never two of one job). */
  batch?: number
  /** The fallback poll; a terminal transition anywhere also wakes the sender. */
  pollMs?: number
  dispatcher?: Dispatcher
  onOutcome?: (outcome: EventOutcome) => void
  /** Where results over RESULT_INLINE_MAX_BYTES live (SPEC §12): events carry them inline. */
  resultStore?: ResultStore
}

/**
 * The backoff after the `attempts`-th failed try: 10 s doubling per try, capped at an hour, with
 * "equal jitter" (a uniform half to all of it), so receivers that come back are not hit by every
 * replica's retries at once while the waits still grow.
 */
export function eventBackoffMs(attempts: number, random: number): number {
  const full = Math.min(EVENT_BACKOFF_CAP_MS, EVENT_BACKOFF_BASE_MS * 2 ** Math.max(0, Math.min(attempts - 1, 20)))
  return Math.round(full * (0.5 + random / 2))
}

/**
 * The event's body (SPEC §10): the job as `GET /jobs/:id` answers it, and its metadata. The
 * result is always inline: `result`, when the job's result lives in the result store, is that
 * stored result (read by the caller), and no `result_url` is sent.
 */
export function eventBody(event: Pick<EventRow, 'type'>, job: JobRow, metadata: unknown, result?: unknown): string {
  const shown = toJobResponse(job)
  return JSON.stringify({ type: event.type, user_id: Number(job.user_id), owner_key: job.owner_key, job: result === undefined ? shown : { ...shown, result }, metadata })
}

/**
 * Sends the outbox to WordPress (SPEC §10), on every replica: each round claims due events with
 * SKIP LOCKED (so one replica sends each), POSTs each one signed the Standard Webhooks way (a
 * fresh timestamp and signature per try, the event's own `webhook-id` on every try), and records
 * the outcome: a 2xx delivers it; anything else is retried with backoff until `give_up_at`, then
 * the event is `failed` (an admin can resend it). Delivery is at least once: a receiver that
 * handled an event but whose 2xx never arrived gets it again, with the same id to dedupe on.
 */
export class OutboxSender {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  /** Every round under way, woken or called directly: stop() waits for them all. */
  private readonly rounds = new Set<Promise<number>>()
  private again = false
  private stopped = true
  private readonly abort = new AbortController()
  private readonly senderId = randomBytes(6).toString('hex')
  private claims = 0
  private lastPruneMs = 0

  constructor(private readonly options: OutboxSenderOptions) {}

  start(): void {
    if (!this.stopped) return
    this.stopped = false
    this.timer = setInterval(() => this.wake(), this.options.pollMs ?? 1_000)
    this.timer.unref()
    this.wake()
  }

  /**
   * Stops claiming and aborts the tries in flight; their events are given back (due now), so the
   * next sender, here or on another replica, sends them at once. Nothing is lost if this never
   * runs (a crash): the claim's lease ends and the events are due again.
   */
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    this.timer = undefined
    this.abort.abort(new Error('the gateway is shutting down'))
    await this.running
    await Promise.all(this.rounds)
  }

  /** Runs a round soon (coalesced: one round at a time, and one more if asked meanwhile). */
  wake(): void {
    if (this.stopped) return
    if (this.running) {
      this.again = true
      return
    }
    this.running = (async () => {
      try {
        do {
          this.again = false
          await this.runOnce()
        } while (this.again && !this.stopped)
      } finally {
        this.running = undefined
      }
    })()
  }

  /** One round: claims a batch of due events and sends them. Resolves to how many were tried; never throws. */
  runOnce(): Promise<number> {
    const round = this.round()
    this.rounds.add(round)
    void round.finally(() => this.rounds.delete(round))
    return round
  }

  private async round(): Promise<number> {
    const { db, clock, log } = this.options
    if (this.abort.signal.aborted) return 0
    let claimed: EventRow[]
    const token = `${this.senderId}:${++this.claims}`
    try {
      claimed = await claimEvents(db, { nowMs: clock.now(), limit: this.options.batch ?? 16, leaseMs: this.options.leaseMs ?? EVENT_LEASE_MS, token })
    } catch (err) {
      log.warn({ err, where: 'events' }, 'could not claim events to send')
      return 0
    }
    await Promise.all(claimed.map((event) => this.sendOne(event, token)))
    await this.prune()
    // A full batch means more may be due: go on without waiting for the poll.
    if (claimed.length === (this.options.batch ?? 16)) this.again = true
    return claimed.length
  }

  private async sendOne(event: EventRow, token: string): Promise<void> {
    const { db, clock, log } = this.options
    const ids = { event_id: Number(event.id), job_id: Number(event.job_id), webhook_id: event.webhook_id }
    try {
      const job = await findJob(db.db, Number(event.job_id))
      let outcome: TryOutcome
      let kind: EventOutcome
      if (!job) {
        outcome = { kind: 'failed', error: 'the job no longer exists (archived or erased) before its event was delivered', status: null }
        kind = 'gone'
      } else if (Number(job.version) !== Number(event.job_version)) {
        // An admin retry reopened the job before this event got through: its result is gone from
        // the row, and the job's next terminal state sends an event of its own.
        outcome = { kind: 'failed', error: `superseded: the job changed (version ${event.job_version} → ${job.version}, an admin retry) before this event was delivered; its next terminal state sends its own event`, status: null }
        kind = 'superseded'
      } else {
        const tried = await this.post(event, job)
        if (tried.aborted) {
          // Shutting down: give the event back, due now, for the next sender.
          await settleTry(db.db, Number(event.id), token, { kind: 'retry', nextAttemptMs: clock.now(), error: 'the sender stopped during the try', status: null }, clock.now())
          return
        }
        outcome = this.afterTry(event, tried)
        kind = outcome.kind
      }
      const written = await settleTry(db.db, Number(event.id), token, outcome, clock.now())
      if (!written) {
        // An admin resent it meanwhile, or the lease ran out and another replica took it over.
        log.info({ ...ids, outcome: kind }, 'event try outcome dropped: the event was claimed again meanwhile')
        return
      }
      this.options.onOutcome?.(kind)
      const line = { ...ids, type: event.type, attempt: Number(event.attempts), outcome: kind, status: outcome.status }
      if (outcome.kind === 'delivered') log.info(line, 'event delivered to WordPress')
      else log.warn({ ...line, error: outcome.error }, outcome.kind === 'failed' ? 'event to WordPress failed for good' : 'event to WordPress will be retried')
    } catch (err) {
      // The database failed under us: the claim's lease ends and the event is due again.
      log.warn({ ...ids, err }, 'event try could not be recorded; it will be retried when its claim ends')
    }
  }

  /** After a try that got no 2xx: the next one with backoff, or `failed` once the window is over. */
  private afterTry(event: EventRow, tried: { status: number | null; error?: string }): TryOutcome {
    const { clock } = this.options
    if (tried.status !== null && tried.status >= 200 && tried.status < 300) return { kind: 'delivered', status: tried.status }
    const now = clock.now()
    const giveUpAt = fromDbTime(event.give_up_at)
    const error = tried.error ?? `HTTP ${tried.status}`
    if (now >= giveUpAt) return { kind: 'failed', error: `gave up after ${event.attempts} tries: ${error}`, status: tried.status }
    return { kind: 'retry', nextAttemptMs: Math.min(giveUpAt, now + eventBackoffMs(Number(event.attempts), clock.random())), error, status: tried.status }
  }

  private async post(event: EventRow, job: JobRow): Promise<{ status: number | null; error?: string; aborted?: boolean }> {
    const { clock, log } = this.options
    let metadata: unknown = null
    try {
      const request = JSON.parse(openRequest(job.request_json, this.options.encryptionKeys, job.idempotency_key)) as { metadata?: unknown }
      metadata = request.metadata ?? null
    } catch (err) {
      // The event still goes out (the result is what WordPress waits for), without the metadata.
      log.warn({ job_id: Number(job.id), err: toError(err).message }, 'the job request cannot be read; its event is sent without metadata')
    }
    const store = this.options.resultStore
    let result: unknown
    if (job.result_ref && store) {
      try {
        result = await loadResult(store, job)
      } catch (err) {
        // The store is unreachable for now: a failed try, retried like a receiver's 5xx.
        return { status: null, error: `the stored result cannot be read: ${toError(err).message}` }
      }
    }
    const body = eventBody(event, job, metadata, result)
    // Signed afresh on every try: the receiver refuses a timestamp minutes old.
    const headers = signStandardWebhook({ secret: this.options.secret, id: event.webhook_id, timestampSeconds: clock.now() / 1000, body })
    const signal = AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs ?? EVENT_TIMEOUT_MS), this.abort.signal])
    try {
      const response = await httpRequest(this.options.url, {
        method: 'POST',
        body,
        headers: { ...headers, 'content-type': 'application/json', 'user-agent': 'wp-ai-gateway-events' },
        signal,
        // undici's request() never follows redirects: a 3xx is a failed try like any other non-2xx.
        ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
      })
      const status = response.statusCode
      if (status >= 200 && status < 300) {
        await response.body.dump()
        return { status }
      }
      return { status, error: `HTTP ${status}${await excerpt(response.body)}` }
    } catch (err) {
      if (this.abort.signal.aborted) return { status: null, aborted: true }
      const e = toError(err)
      const timedOut = e.name === 'TimeoutError' || (e as { code?: string }).code === 'UND_ERR_ABORTED'
      return { status: null, error: timedOut ? `no answer within ${(this.options.timeoutMs ?? EVENT_TIMEOUT_MS) / 1000} s` : `${(e as { code?: string }).code ?? e.name}: ${e.message}` }
    }
  }

  /** Now and then (hourly), delivered events older than a week go. */
  private async prune(): Promise<void> {
    const now = this.options.clock.now()
    if (now - this.lastPruneMs < 3_600_000) return
    this.lastPruneMs = now
    try {
      await pruneDelivered(this.options.db.db, now - DELIVERED_RETENTION_MS, 1000)
    } catch (err) {
      this.options.log.warn({ err, where: 'events' }, 'could not prune delivered events')
    }
  }
}

/** The start of a receiver's error answer, for `last_error` (its status alone rarely says why). */
async function excerpt(body: Dispatcher.ResponseData['body']): Promise<string> {
  let text = ''
  try {
    for await (const chunk of body) {
      text += Buffer.from(chunk as Uint8Array).toString('utf8')
      if (text.length >= ERROR_BODY_CHARS) break
    }
  } catch {
    // What arrived is enough.
  } finally {
    body.destroy()
  }
  const clean = text.replace(/\s+/g, ' ').trim().slice(0, ERROR_BODY_CHARS)
  return clean ? `: ${clean}` : ''
}
