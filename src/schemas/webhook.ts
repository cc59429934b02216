import Type from 'typebox'
import { AnyJson } from './common.js'

/** INT UNSIGNED, the columns usage lands in. */
const UINT32_MAX = 4_294_967_295

/**
 * The webhook body (SPEC §5). Workers may send more than this; what is named must fit. The
 * conditions between fields (result_json exactly when succeeded, …) are checked in
 * jobs/complete-from-webhook.ts.
 */
export const WebhookBody = Type.Object({
  job_id: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, 'x-error': 'must be a positive integer' }),
  idempotency_key: Type.String({ minLength: 1, maxLength: 255, 'x-error': 'is required: the 64-hex key of the dispatch' }),
  status: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')], { 'x-error': 'must be succeeded or failed' }),
  result_json: Type.Optional(AnyJson),
  error_text: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  usage: Type.Optional(Type.Object({
    tokens: Type.Optional(Type.Integer({ minimum: 0, maximum: UINT32_MAX, 'x-error': `must be a whole number from 0 to ${UINT32_MAX}` })),
    ms: Type.Optional(Type.Integer({ minimum: 0, maximum: UINT32_MAX, 'x-error': `must be a whole number from 0 to ${UINT32_MAX}` })),
  })),
  attempt: Type.Optional(Type.Integer({ minimum: 1, maximum: UINT32_MAX, 'x-error': 'must be a positive integer' })),
})
export type WebhookBody = Type.Static<typeof WebhookBody>
