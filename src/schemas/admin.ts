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
