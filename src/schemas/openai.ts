import Type from 'typebox'
import { Nullable } from './common.js'

/**
 * The OpenAI error body (SPEC §11), which the OpenAI SDKs parse: `{ error: { message, type, code, param } }`.
 * Every answer of the `/openai/` routes that is not a success has this shape.
 */
export const OpenAiError = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.String({ examples: ['invalid_request_error'] }),
    code: Nullable(Type.String({ examples: ['model_not_found'] })),
    param: Nullable(Type.String({ description: 'the request field a 400 is about' })),
    budget: Type.Optional(Type.Object({}, { additionalProperties: true, description: 'with insufficient_quota: the budget that is used up (scope, window, limit, used, reserved, resets_at)' })),
  }),
}, { $id: 'OpenAiError', description: 'The OpenAI error shape' })

export const openAiErrorResponses = {
  '4xx': Type.Ref('OpenAiError'),
  '5xx': Type.Ref('OpenAiError'),
}

const TextPart = Type.Object({
  type: Type.String({ description: 'only `text` is supported' }),
  text: Type.Optional(Type.String()),
}, { additionalProperties: true })

const ChatMessage = Type.Object({
  role: Type.Union(['system', 'developer', 'user', 'assistant', 'tool', 'function'].map((r) => Type.Literal(r)), {
    'x-error': 'must be system, developer, user or assistant',
    description: '`developer` is read as `system`; `tool` and `function` are refused',
  }),
  content: Type.Optional(Nullable(Type.Union([Type.String(), Type.Array(TextPart)], { 'x-error': 'must be a string or an array of text parts' }))),
  name: Type.Optional(Type.String()),
}, { additionalProperties: true })

const StopText = Type.String({ minLength: 1, maxLength: 256 })

/**
 * The Chat Completions body (SPEC §11). The fields read are typed here; the ones a job cannot
 * honour (`n` > 1, tools and functions, non-text parts and outputs) are refused in
 * src/openai/chat-request.ts, where the reason can be said; any other field is accepted and ignored,
 * as OpenAI clients and frameworks send many (`presence_penalty: 0`, `seed`, `store`, `metadata`, …).
 * `null` is accepted wherever OpenAI accepts it, and means "not given".
 */
export const ChatCompletionBody = Type.Object({
  model: Type.String({ minLength: 1, 'x-error': 'must be a non-empty string' }),
  messages: Type.Array(ChatMessage, { minItems: 1, 'x-error': 'must be a non-empty array' }),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2, 'x-error': 'must be a number between 0 and 2' }))),
  top_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1, 'x-error': 'must be a number between 0 and 1' }))),
  max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1, 'x-error': 'must be a whole number of at least 1' }))),
  max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1, 'x-error': 'must be a whole number of at least 1', description: 'read as max_tokens' }))),
  stop: Type.Optional(Nullable(Type.Union([StopText, Type.Array(StopText, { maxItems: 4 })], {
    'x-error': 'must be a string or an array of at most 4 non-empty strings (at most 256 characters each)',
  }))),
  stream: Type.Optional(Nullable(Type.Boolean({ 'x-error': 'must be true or false' }))),
  stream_options: Type.Optional(Nullable(Type.Object({
    include_usage: Type.Optional(Nullable(Type.Boolean({ 'x-error': 'must be true or false' }))),
  }, { additionalProperties: true }))),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 1, 'x-error': 'only 1 is supported' }))),
  user: Type.Optional(Nullable(Type.String({ description: 'accepted and ignored' }))),
}, { additionalProperties: true })
export type ChatCompletionBody = Type.Static<typeof ChatCompletionBody>

export const ChatCompletionHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ pattern: '^[\\x20-\\x7e]{1,255}$', 'x-error': 'must be 1 to 255 printable ASCII characters' })),
})

export const ChatCompletion = Type.Object({
  id: Type.String({ examples: ['chatcmpl-42'] }),
  object: Type.Literal('chat.completion'),
  created: Type.Integer(),
  model: Type.String({ description: 'the model that answered' }),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({ role: Type.Literal('assistant'), content: Type.String(), refusal: Type.Null() }),
    logprobs: Type.Null(),
    finish_reason: Type.String(),
  })),
  usage: Type.Optional(Type.Object({
    prompt_tokens: Type.Integer(),
    completion_tokens: Type.Integer(),
    total_tokens: Type.Integer(),
  })),
}, { description: 'The Chat Completions response; with `stream: true`, a `text/event-stream` of `chat.completion.chunk` objects ending with `data: [DONE]`' })

export const ModelList = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(Type.Object({
    id: Type.String(),
    object: Type.Literal('model'),
    created: Type.Integer(),
    owned_by: Type.String({ description: 'the provider that serves it' }),
  })),
})
