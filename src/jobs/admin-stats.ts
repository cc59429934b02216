import type { WordPressAuthenticator } from '../auth/authenticate.js'
import type { Budgets } from '../budgets/budgets.js'
import type { DatabaseHandle } from '../db/database.js'
import { countEvents } from '../db/events-repository.js'
import { jobsByDay, latencySamples } from '../db/jobs-repository.js'
import type { JobStatus } from '../db/schema.js'
import { ApiError } from '../errors.js'
import type { BreakerState } from '../providers/circuit-breaker.js'
import type { ProviderRegistry } from '../providers/registry.js'

const DAY_MS = 86_400_000

/** The longest range the stats answer: a quarter, so the per-day latency reads stay bounded. */
export const STATS_MAX_DAYS = 92
/** Without `from`: this many UTC days, today included. */
export const STATS_DEFAULT_DAYS = 30
/**
 * Provider latencies read per UTC day and per finished status (succeeded, failed): the newest of
 * the day. Enough for a stable p95 (50 samples above it), and a busy day costs no more than a
 * quiet one.
 */
export const LATENCY_SAMPLES_PER_DAY = 1000

/** Budget use of one user in one window (SPEC §8's budget shape, without `resets_at`). */
export interface BudgetUse {
  user_id: number
  /** `user:42`, `role:subscriber`, `default` or `site`: where the limit comes from. */
  scope: string
  window: 'day' | 'month'
  /** null: unlimited. */
  limit: number | null
  used: number
  reserved: number
}

/** What `GET /admin/stats` answers (the admin page's charts). */
export interface AdminStats {
  /** The range answered, [from, to), ISO-8601 UTC. */
  from: string
  to: string
  /** Every UTC day the range touches, oldest first, zeros included; jobs by `created_at`. */
  tokens_per_day: { day: string; input_tokens: number; output_tokens: number; jobs: number }[]
  /** Jobs created in the range, by their status now. */
  jobs_by_status: Record<JobStatus, number>
  /** Provider latency of the finished jobs of each day (nearest-rank percentiles of the samples read). */
  latency_per_day: { day: string; p50_ms: number | null; p95_ms: number | null; samples: number }[]
  /** This process's circuit breakers (each replica keeps its own). */
  breakers: { key: string; state: BreakerState; consecutive_failures: number; open_until: string | null }[]
  /**
   * Budget use of the users closest to their limits: `{ top_users: BudgetUse[] }`, at most 10,
   * ordered by (used + reserved) / limit, then by used + reserved, highest first. `null` while
   * AI_BUDGETS is unset (no budgets: the page says so).
   */
  budgets: { top_users: BudgetUse[] } | null
  /**
   * The outbox of events to WordPress (SPEC §10): `{ pending, failed, delivered }`, the deliveries
   * still to be tried, those that gave up, and those delivered (kept 7 days). `null` while
   * AI_EVENTS_URL is unset (the page shows nothing).
   */
  deliveries: { pending: number; failed: number; delivered: number } | null
}

export interface StatsRange {
  fromMs: number
  toMs: number
}

/** Where the stats come from: the app's decorators of these names. */
export interface StatsServices {
  db: DatabaseHandle
  providers: Pick<ProviderRegistry, 'breakers'>
  budgets: Budgets | undefined
  auth: { readonly wordpress: WordPressAuthenticator | undefined }
  config: { readonly eventsUrl: string | undefined }
}

const startOfUtcDay = (ms: number) => Math.floor(ms / DAY_MS) * DAY_MS

/**
 * The range of a stats request: `to` defaults to the end of today (UTC), `from` to
 * STATS_DEFAULT_DAYS days before it. Refuses an empty range and one over STATS_MAX_DAYS days.
 */
export function statsRange(fromMs: number | undefined, toMs: number | undefined, nowMs: number): StatsRange {
  const to = toMs ?? startOfUtcDay(nowMs) + DAY_MS
  const from = fromMs ?? to - STATS_DEFAULT_DAYS * DAY_MS
  if (from >= to) throw new ApiError('ai_invalid_request', 'from: must be before to', { details: { field: 'from', reason: 'must be before to' } })
  if (to - from > STATS_MAX_DAYS * DAY_MS) {
    throw new ApiError('ai_invalid_request', `to: the range may span at most ${STATS_MAX_DAYS} days`, { details: { field: 'to', reason: `more than ${STATS_MAX_DAYS} days after from` } })
  }
  return { fromMs: from, toMs: to }
}

/** Each UTC day that [fromMs, toMs) touches, as `YYYY-MM-DD`, with the part of the range inside it. */
export function utcDays(range: StatsRange): { day: string; fromMs: number; toMs: number }[] {
  const days: { day: string; fromMs: number; toMs: number }[] = []
  for (let start = startOfUtcDay(range.fromMs); start < range.toMs; start += DAY_MS) {
    days.push({ day: new Date(start).toISOString().slice(0, 10), fromMs: Math.max(start, range.fromMs), toMs: Math.min(start + DAY_MS, range.toMs) })
  }
  return days
}

/** The nearest-rank percentile of ascending `sorted`: the smallest sample with at least p % at or below it. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1]!
}

/** The admin page's numbers for jobs created in the range. */
export async function readAdminStats(services: StatsServices, range: StatsRange): Promise<AdminStats> {
  const days = utcDays(range)
  const rows = await jobsByDay(services.db, range.fromMs, range.toMs)
  const perDay = new Map(days.map((d) => [d.day, { day: d.day, input_tokens: 0, output_tokens: 0, jobs: 0 }]))
  const jobsByStatus: Record<JobStatus, number> = { pending: 0, running: 0, succeeded: 0, failed: 0, canceled: 0 }
  for (const r of rows) {
    jobsByStatus[r.status] += r.jobs
    const day = perDay.get(r.day)
    if (!day) continue
    day.jobs += r.jobs
    day.input_tokens += r.input_tokens
    day.output_tokens += r.output_tokens
  }

  // One bounded read per day (see latencySamplesQuery), one day after another: a quarter's range
  // is some 180 short index reads, never one sort of every job in it.
  const latency: AdminStats['latency_per_day'] = []
  for (const d of days) {
    const samples = (await latencySamples(services.db.db, d.fromMs, d.toMs, LATENCY_SAMPLES_PER_DAY)).sort((a, b) => a - b)
    latency.push({ day: d.day, p50_ms: percentile(samples, 50), p95_ms: percentile(samples, 95), samples: samples.length })
  }

  return {
    from: new Date(range.fromMs).toISOString(),
    to: new Date(range.toMs).toISOString(),
    tokens_per_day: [...perDay.values()],
    jobs_by_status: jobsByStatus,
    latency_per_day: latency,
    breakers: services.providers.breakers().map((b) => ({
      key: b.key,
      state: b.state,
      consecutive_failures: b.consecutiveFailures,
      open_until: b.openUntil === undefined ? null : new Date(b.openUntil).toISOString(),
    })),
    budgets: services.budgets ? { top_users: await services.budgets.topUsers(10, rolesOf(services)) } : null,
    deliveries: services.config.eventsUrl ? await countEvents(services.db.db) : null,
  }
}

/** A user's roles as WordPress stores them (cached reads), when WordPress's tables are there. */
function rolesOf(services: StatsServices): ((userId: number) => Promise<readonly string[] | undefined>) | undefined {
  const wordpress = services.auth.wordpress
  if (!wordpress) return undefined
  return async (userId) => (await wordpress.token({ method: 'token', userId, ownerKey: `u:${userId}`, canCreate: true, isAdmin: false })).roles
}
