import { createHash } from 'node:crypto'
import canonicalizeModule from 'canonicalize'
import { ApiError } from '../errors.js'
import type { CreateJobBody } from '../schemas/job.js'

export interface Message {
  role: 'system' | 'user' | 'assistant'
  content: string
}

export interface JobParams {
  temperature?: number
  top_p?: number
  max_tokens?: number
  stop?: string | string[]
}

/** What is stored in `request_json` and handed to providers and external workers. */
export interface JobRequest {
  model: string
  input?: string
  messages?: Message[]
  params: JobParams
  metadata?: Record<string, unknown>
  /** `bulk` waits while interactive jobs are due (SPEC §8); absent means interactive. */
  priority?: 'bulk'
}

export interface RequestRules {
  allowedModels: ReadonlySet<string>
  defaultModel: string
  /** AI_MAX_TOKENS, or a model's own lower `max_tokens`. */
  maxTokensFor(model: string): number
}

// The package is CommonJS with an ESM-style declaration; at run time the default import is the function.
const canonicalize = canonicalizeModule as unknown as (value: unknown) => string | undefined

const METADATA_MAX_BYTES = 2048
/** SPEC §4: metadata is nested at most 8 levels (the metadata object itself is the first). */
export const METADATA_MAX_DEPTH = 8

function invalid(field: string, reason: string): ApiError {
  return new ApiError('ai_invalid_request', `${field}: ${reason}`, { details: { field, reason } })
}

/** How many objects and arrays lie inside one another in `value` (a scalar is 0). */
function depthOf(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0
  let deepest = 0
  for (const child of Object.values(value)) deepest = Math.max(deepest, depthOf(child))
  return deepest + 1
}

/**
 * What the body schema (src/schemas/job.ts) cannot say about a `POST /jobs` body (SPEC §4), and
 * the model it resolves to. The body has already passed the schema; every refusal here is a 400
 * that names the field and the reason.
 */
export function parseJobBody(body: CreateJobBody, rules: RequestRules, headerKey: string | undefined): { request: JobRequest; clientKey: string | undefined } {
  let model = rules.defaultModel
  if (body.model !== undefined) {
    if (!rules.allowedModels.has(body.model)) throw invalid('model', `is not an allowed model (allowed: ${[...rules.allowedModels].join(', ')})`)
    model = body.model
  }

  const hasInput = body.input !== undefined
  const hasMessages = body.messages !== undefined
  if (hasInput === hasMessages) throw invalid(hasInput ? 'messages' : 'input', 'exactly one of input and messages is required')

  const params: JobParams = { ...body.params }
  const cap = rules.maxTokensFor(model)
  if (params.max_tokens !== undefined && params.max_tokens > cap) throw invalid('params.max_tokens', `must be at most ${cap}`)

  const request: JobRequest = { model, params }
  if (body.input !== undefined) request.input = body.input
  else request.messages = body.messages!.map((m) => ({ role: m.role, content: m.content }))

  if (body.metadata !== undefined) {
    if (depthOf(body.metadata) > METADATA_MAX_DEPTH) throw invalid('metadata', `must be nested at most ${METADATA_MAX_DEPTH} levels`)
    if (Buffer.byteLength(JSON.stringify(body.metadata)) > METADATA_MAX_BYTES) throw invalid('metadata', `must be at most ${METADATA_MAX_BYTES} bytes of JSON`)
    request.metadata = body.metadata
  }
  if (body.priority === 'bulk') request.priority = 'bulk'

  if (body.idempotency_key !== undefined && headerKey !== undefined && body.idempotency_key !== headerKey) {
    throw invalid('idempotency_key', 'differs from the Idempotency-Key header')
  }
  return { request, clientKey: body.idempotency_key ?? headerKey }
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** `input_hash = hex(sha256(canonical_json({ model, input | messages, params[, priority] })))`, RFC 8785. */
export function inputHash(request: JobRequest): string {
  const subject: Record<string, unknown> = { model: request.model, params: request.params }
  if (request.input !== undefined) subject.input = request.input
  else subject.messages = request.messages
  // SPEC §3: `priority` joins the hash only when it is bulk, so interactive hashes stay as before.
  if (request.priority === 'bulk') subject.priority = 'bulk'
  return sha256Hex(canonicalize(subject) as string)
}

/** The stored key for a client key: scoped by owner, so one owner's key never finds another's job. */
export function scopedIdempotencyKey(ownerKey: string, clientKey: string): string {
  return sha256Hex(`${ownerKey}:${clientKey}`)
}

/** The stored key when the client sent none: unique per job (SPEC §3). */
export function generatedIdempotencyKey(ownerKey: string, hash: string, model: string, createdAtMs: number, random: string): string {
  return sha256Hex(`${ownerKey}:${hash}:${model}:${createdAtMs}:${random}`)
}
