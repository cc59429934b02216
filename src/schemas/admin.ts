import Type from 'typebox'
import { Nullable } from './common.js'
import { Job, JobStatus } from './job.js'

const DATE_PATTERN = '^\\d{4}-\\d\\d-\\d\\d(T[\\d:.]+(Z|[+-]\\d\\d:\\d\\d)?)?$'
export const DateParam = Type.String({ pattern: DATE_PATTERN, 'x-error': 'must be a date (YYYY-MM-DD) or an ISO-8601 time' })

export const AdminJobsQuery = Type.Object({
  status: Type.Optional(JobStatus),
  user_id: Type.Optional(Type.Integer({ minimum: 0, 'x-error': 'must be a whole number' })),
  model: Type.Optional(Type.String({ minLength: 1 })),
  from: Type.Optional(DateParam),
  to: Type.Optional(DateParam),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, 'x-error': 'must be a whole number from 1 to 100' })),
  cursor: Type.Optional(Type.String()),
})

/** A job as the admin list shows it: the job JSON and whose it is (never the owner key itself). */
export const AdminJob = Type.Object({
  ...Job.properties,
  user_id: Type.Integer({ minimum: 0, description: '0 for a visitor' }),
})

export const AdminJobList = Type.Object({
  jobs: Type.Array(AdminJob),
  next_cursor: Nullable(Type.String()),
})

export const UsageCsvQuery = Type.Object({
  from: Type.Optional(DateParam),
  to: Type.Optional(DateParam),
  group: Type.Optional(Type.String({ description: 'any of day, user, model, comma-separated (default all three)' })),
})

export const AdminStatsQuery = Type.Object({
  from: Type.Optional(DateParam),
  to: Type.Optional(DateParam),
})

const Day = Type.String({ pattern: '^\\d{4}-\\d\\d-\\d\\d$', description: 'a UTC day, YYYY-MM-DD' })
const Count = Type.Integer({ minimum: 0 })
const IsoTime = Type.String({ description: 'ISO-8601 UTC with milliseconds' })

/** The admin page's charts (`GET /admin/stats`); src/jobs/admin-stats.ts says what each number is. */
export const AdminStats = Type.Object({
  from: IsoTime,
  to: IsoTime,
  tokens_per_day: Type.Array(Type.Object({ day: Day, input_tokens: Count, output_tokens: Count, jobs: Count }), {
    description: 'every UTC day of the range, oldest first, by the jobs created that day',
  }),
  jobs_by_status: Type.Object({ pending: Count, running: Count, succeeded: Count, failed: Count, canceled: Count }, {
    description: 'jobs created in the range, by their status now',
  }),
  latency_per_day: Type.Array(Type.Object({ day: Day, p50_ms: Nullable(Count), p95_ms: Nullable(Count), samples: Count }), {
    description: 'provider latency of the finished jobs of each day: nearest-rank percentiles of the newest samples of the day (null without samples)',
  }),
  breakers: Type.Array(Type.Object({
    key: Type.String({ description: 'the provider endpoint' }),
    state: Type.Union([Type.Literal('closed'), Type.Literal('open'), Type.Literal('half-open')]),
    consecutive_failures: Count,
    open_until: Nullable(IsoTime),
  }), { description: "this replica's circuit breakers" }),
  budgets: Nullable(Type.Object({
    top_users: Type.Array(Type.Object({
      user_id: Count,
      scope: Type.String({ examples: ['user:42', 'role:subscriber', 'default'] }),
      window: Type.Union([Type.Literal('day'), Type.Literal('month')]),
      limit: Nullable(Count),
      used: Count,
      reserved: Count,
    })),
  }, { description: 'null when no budgets are configured' })),
  deliveries: Nullable(Type.Object({ pending: Count, failed: Count, delivered: Count }, { description: 'events to WordPress by delivery status (delivered ones are kept 7 days); null when they are off' })),
})

export const EventStatus = Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')], { 'x-error': 'must be pending, delivered or failed' })

export const AdminEventsQuery = Type.Object({
  status: Type.Optional(EventStatus),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, 'x-error': 'must be a whole number from 1 to 100' })),
  cursor: Type.Optional(Type.String()),
})

export const EventIdParams = Type.Object({
  id: Type.String({ pattern: '^[1-9][0-9]{0,15}$', description: 'the event id' }),
})

/** One event to WordPress and how its delivery stands (SPEC §10). */
export const AdminEvent = Type.Object({
  id: Type.Integer({ minimum: 1 }),
  job_id: Type.Integer({ minimum: 1 }),
  type: Type.Union([Type.Literal('job.succeeded'), Type.Literal('job.failed'), Type.Literal('job.canceled')]),
  webhook_id: Type.String({ description: 'the Standard Webhooks id, the same on every try of this event' }),
  status: EventStatus,
  attempts: Count,
  next_attempt_at: Nullable(IsoTime),
  give_up_at: IsoTime,
  last_status: Nullable(Type.Integer({ description: "the receiver's HTTP status on the last try" })),
  last_error: Nullable(Type.String()),
  created_at: IsoTime,
  delivered_at: Nullable(IsoTime),
})

export const AdminEventList = Type.Object({
  events: Type.Array(AdminEvent),
  next_cursor: Nullable(Type.String()),
})
