import Type from 'typebox'

/** `null` written as such (fast-json-stringify would turn a bare optional into "" or 0). */
export const Nullable = <T extends Type.TSchema>(schema: T) => Type.Union([schema, Type.Null()])

/** Every refusal: the WordPress REST error shape that `wp.apiFetch` callers read (SPEC §4). */
export const WpError = Type.Object({
  code: Type.String({ examples: ['ai_invalid_request'] }),
  message: Type.String(),
  data: Type.Object({
    status: Type.Integer(),
    field: Type.Optional(Type.String({ description: 'the field a 400 is about' })),
    reason: Type.Optional(Type.String({ description: 'what is wrong with it' })),
  }, { additionalProperties: true }),
}, { $id: 'WpError', description: 'The WordPress REST error shape' })

/** The error answers every route may give, for the OpenAPI document. */
export const errorResponses = {
  '4xx': Type.Ref('WpError'),
  '5xx': Type.Ref('WpError'),
}

/**
 * A job id in a path. Ids are positive and stay below 2^53: longer digit strings would round to
 * some other job's id, so they name no job (404).
 */
export const JobIdParams = Type.Object({
  id: Type.String({ pattern: '^[1-9][0-9]{0,15}$', description: 'the job id' }),
})

/** Idempotency keys: 1–255 printable ASCII characters (SPEC §3). */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x20-\\x7e]{1,255}$'
export const IdempotencyKey = Type.String({ pattern: IDEMPOTENCY_KEY_PATTERN, 'x-error': 'must be 1 to 255 printable ASCII characters' })

/** Any JSON value (a job's result). */
export const AnyJson = Type.Unknown({ description: 'any JSON value' })
