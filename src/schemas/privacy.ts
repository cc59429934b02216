import Type from 'typebox'
import { Nullable } from './common.js'
import { Job } from './job.js'

/** A WordPress user id in a path: 1 and up (0 is every visitor, not a person); checked by `userIdOf`. */
export const UserIdParams = Type.Object({
  id: Type.String({ maxLength: 100, description: 'the WordPress user id, from 1', examples: ['42'] }),
})

export const ExportQuery = Type.Object({
  page: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1, 'x-error': 'must be a whole number from 1' })),
  per_page: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 100, 'x-error': 'must be a whole number from 1 to 100' })),
})

const Message = Type.Object({ role: Type.String(), content: Type.String() })
const JsonObject = Type.Object({}, { additionalProperties: true })

export const ExportedJob = Type.Object({
  ...Job.properties,
  user_id: Type.Integer({ minimum: 0 }),
  request: Nullable(Type.Object({
    input: Type.Optional(Type.String()),
    messages: Type.Optional(Type.Array(Message)),
    params: JsonObject,
    metadata: Type.Optional(JsonObject),
  }, { description: 'what the user sent, opened when it is encrypted; null when it cannot be opened (see request_error)' })),
  request_error: Type.Optional(Type.String({ description: 'why request is null: a missing encryption key' })),
  metadata: Nullable(JsonObject),
})

export const ExportPage = Type.Object({
  user_id: Type.Integer(),
  page: Type.Integer(),
  per_page: Type.Integer(),
  done: Type.Boolean({ description: 'true on the last page' }),
  jobs: Type.Array(ExportedJob, { description: "the user's jobs in the table, oldest first" }),
})

export const EraseBody = Type.Union([Type.Null(), Type.Object({}, { additionalProperties: false })], { description: 'send {} (no fields)' })

export const EraseReport = Type.Object({
  user_id: Type.Integer(),
  jobs_erased: Type.Integer({ minimum: 0 }),
  results_erased: Type.Integer({ minimum: 0, description: 'stored results (outside the table) deleted' }),
  archive_lines_erased: Type.Integer({ minimum: 0, description: 'archived jobs removed from archive files' }),
  archive_files_missing: Type.Integer({ minimum: 0, description: 'archive files the database lists that this host cannot see' }),
  done: Type.Boolean({ description: 'false while more remains: call again' }),
})
