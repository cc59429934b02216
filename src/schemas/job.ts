import Type from 'typebox'
import { AnyJson, IdempotencyKey, Nullable } from './common.js'

export const JOB_STATUSES = ['pending', 'running', 'succeeded', 'failed', 'canceled'] as const
export const JobStatus = Type.Union(JOB_STATUSES.map((s) => Type.Literal(s)), { 'x-error': `must be one of ${JOB_STATUSES.join(', ')}` })

/** Job JSON (SPEC §4): the one shape of a job in the API. */
export const Job = Type.Object({
  job_id: Type.Integer({ minimum: 1 }),
  status: JobStatus,
  model: Type.String(),
  created_at: Type.String({ description: 'ISO-8601 UTC with milliseconds' }),
  updated_at: Type.String({ description: 'ISO-8601 UTC with milliseconds' }),
  attempts: Type.Integer({ minimum: 0 }),
  result: AnyJson,
  result_url: Type.Optional(Type.String({ description: 'Only when the result is stored outside the table (over RESULT_INLINE_MAX_BYTES; `result` is then null): a signed link to it, valid until its `exp` (1 to 2 hours)' })),
  error: Nullable(Type.String()),
  usage: Type.Object({
    input_tokens: Nullable(Type.Integer()),
    output_tokens: Nullable(Type.Integer()),
    provider_ms: Nullable(Type.Integer()),
    worker_ms: Nullable(Type.Integer()),
  }),
  request_id: Type.String(),
}, { $id: 'Job' })

const Role = Type.Union([Type.Literal('system'), Type.Literal('user'), Type.Literal('assistant')], { 'x-error': 'must be system, user or assistant' })
const StopText = Type.String({ minLength: 1, maxLength: 256 })

/**
 * The body of `POST /jobs` (SPEC §4). What a schema cannot say is checked in jobs/job-request.ts:
 * exactly one of `input` and `messages`, the model being allowed, `max_tokens` under the model's
 * cap, metadata's size and depth, and the header key matching the body key.
 */
export const CreateJobBody = Type.Object({
  model: Type.Optional(Type.String({ minLength: 1, 'x-error': 'must be a non-empty string' })),
  input: Type.Optional(Type.String({ pattern: '\\S', 'x-error': 'must be a non-empty string' })),
  messages: Type.Optional(Type.Array(Type.Object({
    role: Role,
    content: Type.String(),
  }, { additionalProperties: false }), { minItems: 1, 'x-error': 'must be a non-empty array' })),
  params: Type.Optional(Type.Object({
    temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2, 'x-error': 'must be a number between 0 and 2' })),
    top_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1, 'x-error': 'must be a number between 0 and 1' })),
    max_tokens: Type.Optional(Type.Integer({ minimum: 1, 'x-error': 'must be a whole number of at least 1' })),
    stop: Type.Optional(Type.Union([StopText, Type.Array(StopText, { minItems: 1, maxItems: 4 })], {
      'x-error': 'must be a string or an array of 1 to 4 non-empty strings (at most 256 characters each)',
    })),
  }, { additionalProperties: false })),
  metadata: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'at most 2 KB of JSON, nested at most 8 levels' })),
  idempotency_key: Type.Optional(IdempotencyKey),
  priority: Type.Optional(Type.Union([Type.Literal('interactive'), Type.Literal('bulk')], { 'x-error': 'must be interactive or bulk' })),
}, { additionalProperties: false })
export type CreateJobBody = Type.Static<typeof CreateJobBody>

export const CreateJobHeaders = Type.Object({
  'idempotency-key': Type.Optional(IdempotencyKey),
})

export const JobAccepted = Type.Object({
  job_id: Type.Integer({ minimum: 1 }),
  status: Type.Literal('pending'),
  request_id: Type.String(),
})

export const ListJobsQuery = Type.Object({
  status: Type.Optional(JobStatus),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, 'x-error': 'must be a whole number from 1 to 100' })),
  cursor: Type.Optional(Type.String({ description: 'the next_cursor of the previous page' })),
})

export const JobList = Type.Object({
  jobs: Type.Array(Type.Ref('Job')),
  next_cursor: Nullable(Type.String()),
})
