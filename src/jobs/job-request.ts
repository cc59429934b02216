import { createHash } from 'node:crypto'
import canonicalizeModule from 'canonicalize'
import { ApiError } from '../errors.js'

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
}

export interface RequestRules {
  allowedModels: ReadonlySet<string>
  defaultModel: string
  /** AI_MAX_TOKENS, or a model's own lower `max_tokens`. */
  maxTokensFor(model: string): number
}

const BODY_FIELDS = new Set(['model', 'input', 'messages', 'params', 'metadata', 'idempotency_key'])
const PARAM_FIELDS = new Set(['temperature', 'top_p', 'max_tokens', 'stop'])
const ROLES = new Set(['system', 'user', 'assistant'])
// The package is CommonJS with an ESM-style declaration; at run time the default import is the function.
const canonicalize = canonicalizeModule as unknown as (value: unknown) => string | undefined

const METADATA_MAX_BYTES = 2048
const PRINTABLE_ASCII = /^[\x20-\x7e]{1,255}$/

function invalid(field: string, reason: string): ApiError {
  return new ApiError('ai_invalid_request', `${field}: ${reason}`, { details: { field, reason } })
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function checkNumber(params: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = params[name]
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`params.${name}`, 'must be a number')
  if (v < min || v > max) throw invalid(`params.${name}`, `must be between ${min} and ${max}`)
  return v
}

function parseParams(raw: unknown, maxTokens: number): JobParams {
  if (raw === undefined || raw === null) return {}
  if (!isObject(raw)) throw invalid('params', 'must be an object')
  for (const key of Object.keys(raw)) {
    if (!PARAM_FIELDS.has(key)) throw invalid(`params.${key}`, 'is not an allowed parameter (temperature, top_p, max_tokens, stop)')
  }
  const params: JobParams = {}
  const temperature = checkNumber(raw, 'temperature', 0, 2)
  if (temperature !== undefined) params.temperature = temperature
  const topP = checkNumber(raw, 'top_p', 0, 1)
  if (topP !== undefined) params.top_p = topP
  if (raw.max_tokens !== undefined) {
    const v = raw.max_tokens
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw invalid('params.max_tokens', 'must be a whole number of at least 1')
    if (v > maxTokens) throw invalid('params.max_tokens', `must be at most ${maxTokens}`)
    params.max_tokens = v
  }
  if (raw.stop !== undefined) {
    const v = raw.stop
    const ok = typeof v === 'string' ? v.length > 0 && v.length <= 256
      : Array.isArray(v) && v.length >= 1 && v.length <= 4 && v.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 256)
    if (!ok) throw invalid('params.stop', 'must be a string or an array of 1 to 4 non-empty strings (at most 256 characters each)')
    params.stop = v as string | string[]
  }
  return params
}

function parseMessages(raw: unknown): Message[] {
  if (!Array.isArray(raw) || raw.length === 0) throw invalid('messages', 'must be a non-empty array')
  return raw.map((m, i) => {
    if (!isObject(m)) throw invalid(`messages[${i}]`, 'must be an object with role and content')
    for (const key of Object.keys(m)) if (key !== 'role' && key !== 'content') throw invalid(`messages[${i}].${key}`, 'is not allowed')
    if (typeof m.role !== 'string' || !ROLES.has(m.role)) throw invalid(`messages[${i}].role`, 'must be system, user or assistant')
    if (typeof m.content !== 'string') throw invalid(`messages[${i}].content`, 'must be a string')
    return { role: m.role as Message['role'], content: m.content }
  })
}

/** Checks a client idempotency key: 1–255 printable ASCII characters (SPEC §3). */
export function checkIdempotencyKey(value: unknown, field: string): string {
  if (typeof value !== 'string' || !PRINTABLE_ASCII.test(value)) throw invalid(field, 'must be 1 to 255 printable ASCII characters')
  return value
}

/**
 * Validates a `POST /jobs` body (SPEC §4) and resolves the model. Every refusal is a 400 that
 * names the field and the reason.
 */
export function parseJobBody(body: unknown, rules: RequestRules, headerKey: string | undefined): { request: JobRequest; clientKey: string | undefined } {
  if (!isObject(body)) throw invalid('body', 'must be a JSON object')
  for (const key of Object.keys(body)) if (!BODY_FIELDS.has(key)) throw invalid(key, 'is not a known field')

  let model = rules.defaultModel
  if (body.model !== undefined) {
    if (typeof body.model !== 'string' || body.model === '') throw invalid('model', 'must be a non-empty string')
    if (!rules.allowedModels.has(body.model)) throw invalid('model', `is not an allowed model (allowed: ${[...rules.allowedModels].join(', ')})`)
    model = body.model
  }

  const hasInput = body.input !== undefined
  const hasMessages = body.messages !== undefined
  if (hasInput === hasMessages) throw invalid(hasInput ? 'messages' : 'input', 'exactly one of input and messages is required')

  const request: JobRequest = { model, params: parseParams(body.params, rules.maxTokensFor(model)) }
  if (hasInput) {
    if (typeof body.input !== 'string' || body.input.trim() === '') throw invalid('input', 'must be a non-empty string')
    request.input = body.input
  } else {
    request.messages = parseMessages(body.messages)
  }

  if (body.metadata !== undefined) {
    if (!isObject(body.metadata)) throw invalid('metadata', 'must be an object')
    if (Buffer.byteLength(JSON.stringify(body.metadata)) > METADATA_MAX_BYTES) throw invalid('metadata', `must be at most ${METADATA_MAX_BYTES} bytes of JSON`)
    request.metadata = body.metadata
  }

  const bodyKey = body.idempotency_key === undefined ? undefined : checkIdempotencyKey(body.idempotency_key, 'idempotency_key')
  const header = headerKey === undefined ? undefined : checkIdempotencyKey(headerKey, 'Idempotency-Key')
  if (bodyKey !== undefined && header !== undefined && bodyKey !== header) {
    throw invalid('idempotency_key', 'differs from the Idempotency-Key header')
  }
  return { request, clientKey: bodyKey ?? header }
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** `input_hash = hex(sha256(canonical_json({ model, input | messages, params })))`, RFC 8785. */
export function inputHash(request: JobRequest): string {
  const subject: Record<string, unknown> = { model: request.model, params: request.params }
  if (request.input !== undefined) subject.input = request.input
  else subject.messages = request.messages
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
