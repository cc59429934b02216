import { createHash, createHmac, timingSafeEqual } from 'node:crypto'

/**
 * Webhook signatures (SPEC §5 "Webhook"). Two schemes are accepted, and every configured secret
 * is tried for both, so a worker can move from the seed's scheme to Standard Webhooks, and a
 * secret can be rotated, without a flag day:
 * - the seed's `X-AI-Signature: base64(HMAC-SHA256(secret, raw_body))` with `X-AI-Timestamp`;
 * - Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …`).
 */

export type WebhookScheme = 'x-ai-signature' | 'standard'

export type WebhookRefusal =
  /** Neither scheme's headers were sent. */
  | 'missing_signature'
  /** A header was present but not in the scheme's form (bad timestamp, empty id, …). */
  | 'malformed_headers'
  /** No secret produced a matching signature. */
  | 'signature_mismatch'
  /** The signature matched but the timestamp lies more than the allowed drift from now. */
  | 'timestamp_out_of_range'

export type WebhookVerification =
  | { ok: true; scheme: WebhookScheme; replayKey: string }
  | { ok: false; reason: WebhookRefusal }

export type WebhookHeaders = Readonly<Record<string, string | readonly string[] | undefined>>

export interface VerifyWebhookOptions {
  /** The request body exactly as received; signatures are over these bytes. */
  rawBody: Buffer
  /** Request headers with lowercased names, as Node and Fastify give them. */
  headers: WebhookHeaders
  /** The `AI_WEBHOOK_SECRET` entries, see {@link parseWebhookSecrets}. */
  secrets: readonly string[]
  nowMs: number
  /** Largest allowed |now − timestamp|, in seconds (SPEC: 120). */
  driftSeconds?: number
}

const DEFAULT_DRIFT_SECONDS = 120
const WHSEC_PREFIX = 'whsec_'
const SHA256_BYTES = 32
// Unix seconds. Twelve digits reach the year 33658; anything longer is not a timestamp.
const TIMESTAMP_PATTERN = /^[0-9]{1,12}$/
// Standard base64, padding optional (some senders strip it); base64url is not accepted.
const BASE64_PATTERN = /^[A-Za-z0-9+/]+={0,2}$/
// Standard Webhooks ids are opaque, but they become a Redis key: keep them short and printable.
const WEBHOOK_ID_PATTERN = /^[\x21-\x7e]{1,256}$/
// More candidates than this is not a rotation, it is an attempt to make us hash a lot.
const MAX_SIGNATURE_CANDIDATES = 16

/**
 * Verifies a result webhook on its raw bytes. Never throws: anything malformed is a refusal.
 * Every digest comparison runs in constant time, and every secret × candidate pair is compared
 * even after a match, so the time taken does not reveal which entry (or which part) matched.
 */
export function verifyWebhookSignature(options: VerifyWebhookOptions): WebhookVerification {
  try {
    return verify(options)
  } catch {
    // Defensive: nothing above should throw, but a webhook must be refused, not crash the route.
    return { ok: false, reason: 'malformed_headers' }
  }
}

function verify(options: VerifyWebhookOptions): WebhookVerification {
  const { rawBody, headers, secrets, nowMs } = options
  const driftSeconds = options.driftSeconds ?? DEFAULT_DRIFT_SECONDS

  const standardSignature = header(headers, 'webhook-signature')
  const seedSignature = header(headers, 'x-ai-signature')
  if (standardSignature === undefined && seedSignature === undefined) {
    return { ok: false, reason: 'missing_signature' }
  }

  // When both header sets are sent, either may carry the valid signature; the first refusal
  // reason is kept so the log says something useful.
  let refusal: WebhookRefusal | undefined
  if (standardSignature !== undefined) {
    const result = verifyStandard(rawBody, headers, standardSignature, secrets, nowMs, driftSeconds)
    if (result.ok) return result
    refusal = result.reason
  }
  if (seedSignature !== undefined) {
    const result = verifySeed(rawBody, headers, seedSignature, secrets, nowMs, driftSeconds)
    if (result.ok) return result
    refusal ??= result.reason
  }
  return { ok: false, reason: refusal ?? 'signature_mismatch' }
}

function verifySeed(
  rawBody: Buffer,
  headers: WebhookHeaders,
  signatureHeader: string,
  secrets: readonly string[],
  nowMs: number,
  driftSeconds: number,
): WebhookVerification {
  const timestamp = parseTimestamp(header(headers, 'x-ai-timestamp'))
  const candidate = decodeDigest(signatureHeader.trim())
  if (timestamp === undefined || candidate === undefined) return { ok: false, reason: 'malformed_headers' }

  let matched = false
  for (const secret of secrets) {
    // The entry's UTF-8 bytes are the key, exactly as PHP's hash_hmac() uses a string key.
    const expected = createHmac('sha256', Buffer.from(secret, 'utf8')).update(rawBody).digest()
    matched = timingSafeEqual(expected, candidate) || matched
  }
  if (!matched) return { ok: false, reason: 'signature_mismatch' }
  // The seed's timestamp is not covered by the signature; it still bounds how long a captured
  // delivery is worth anything, and the replay guard (sha256 of the body) covers that window.
  if (!withinDrift(timestamp, nowMs, driftSeconds)) return { ok: false, reason: 'timestamp_out_of_range' }
  return { ok: true, scheme: 'x-ai-signature', replayKey: `sha256:${createHash('sha256').update(rawBody).digest('hex')}` }
}

function verifyStandard(
  rawBody: Buffer,
  headers: WebhookHeaders,
  signatureHeader: string,
  secrets: readonly string[],
  nowMs: number,
  driftSeconds: number,
): WebhookVerification {
  const id = header(headers, 'webhook-id')
  const timestampText = header(headers, 'webhook-timestamp')
  const timestamp = parseTimestamp(timestampText)
  if (id === undefined || !WEBHOOK_ID_PATTERN.test(id) || timestamp === undefined || timestampText === undefined) {
    return { ok: false, reason: 'malformed_headers' }
  }

  // `v1,<base64>` entries separated by spaces; other versions (v1a is asymmetric) are skipped.
  const candidates: Buffer[] = []
  for (const part of signatureHeader.split(' ')) {
    if (part === '') continue
    const comma = part.indexOf(',')
    if (comma < 0 || part.slice(0, comma) !== 'v1') continue
    const digest = decodeDigest(part.slice(comma + 1))
    if (digest !== undefined) candidates.push(digest)
  }
  if (candidates.length === 0 || candidates.length > MAX_SIGNATURE_CANDIDATES) {
    return { ok: false, reason: 'malformed_headers' }
  }

  const signedPrefix = Buffer.from(`${id}.${timestampText}.`, 'utf8')
  let matched = false
  for (const secret of secrets) {
    const key = standardWebhookKey(secret)
    if (key === undefined) continue
    const expected = createHmac('sha256', key).update(signedPrefix).update(rawBody).digest()
    for (const candidate of candidates) matched = timingSafeEqual(expected, candidate) || matched
  }
  if (!matched) return { ok: false, reason: 'signature_mismatch' }
  if (!withinDrift(timestamp, nowMs, driftSeconds)) return { ok: false, reason: 'timestamp_out_of_range' }
  return { ok: true, scheme: 'standard', replayKey: `id:${id}` }
}

/** The HMAC key of a secret entry under Standard Webhooks; undefined for an unusable `whsec_` entry. */
function standardWebhookKey(secret: string): Buffer | undefined {
  if (!secret.startsWith(WHSEC_PREFIX)) return Buffer.from(secret, 'utf8')
  const encoded = secret.slice(WHSEC_PREFIX.length)
  if (encoded === '' || !isBase64(encoded)) return undefined
  return Buffer.from(encoded, 'base64')
}

/** A base64 HMAC-SHA256 digest, or undefined when the text is not exactly that. */
function decodeDigest(text: string): Buffer | undefined {
  if (!isBase64(text)) return undefined
  const bytes = Buffer.from(text, 'base64')
  // Equal lengths are required by timingSafeEqual; a digest's length is public anyway.
  return bytes.length === SHA256_BYTES ? bytes : undefined
}

function isBase64(text: string): boolean {
  return BASE64_PATTERN.test(text) && text.replace(/=+$/, '').length % 4 !== 1
}

function parseTimestamp(text: string | undefined): number | undefined {
  if (text === undefined || !TIMESTAMP_PATTERN.test(text)) return undefined
  return Number(text)
}

function withinDrift(timestampSeconds: number, nowMs: number, driftSeconds: number): boolean {
  // Whole seconds on both sides, as the Standard Webhooks libraries do, so "120 s" means 120.
  const nowSeconds = Math.floor(nowMs / 1000)
  return Math.abs(nowSeconds - timestampSeconds) <= driftSeconds
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  const value = headers[name]
  // Node joins repeated headers into one string; an array here means something unusual, refuse it.
  return typeof value === 'string' ? value : undefined
}

/**
 * Splits `AI_WEBHOOK_SECRET` into its entries (comma-separated, for rotation; blanks ignored).
 * Throws, naming the variable but never the secret, when a `whsec_` entry is not valid base64.
 */
export function parseWebhookSecrets(commaSeparated: string | undefined): string[] {
  if (commaSeparated === undefined) return []
  const entries = commaSeparated.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
  entries.forEach((entry, index) => {
    if (entry.startsWith(WHSEC_PREFIX) && standardWebhookKey(entry) === undefined) {
      throw new Error(`AI_WEBHOOK_SECRET: entry ${index + 1} starts with "whsec_" but the rest is not valid base64`)
    }
  })
  return entries
}

export interface StandardWebhookHeaders {
  'webhook-id': string
  'webhook-timestamp': string
  'webhook-signature': string
}

/** Signs a delivery under Standard Webhooks; returns the three headers to send with `body`. */
export function signStandardWebhook(options: {
  secret: string
  id: string
  timestampSeconds: number
  body: string | Buffer
}): StandardWebhookHeaders {
  const key = standardWebhookKey(options.secret)
  if (key === undefined) throw new Error('webhook secret starts with "whsec_" but the rest is not valid base64')
  const timestamp = String(Math.floor(options.timestampSeconds))
  const signature = createHmac('sha256', key)
    .update(`${options.id}.${timestamp}.`, 'utf8')
    .update(typeof options.body === 'string' ? Buffer.from(options.body, 'utf8') : options.body)
    .digest('base64')
  return { 'webhook-id': options.id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` }
}

/** The seed's `X-AI-Signature` value for `body`: base64(HMAC-SHA256(secret's UTF-8 bytes, body)). */
export function signXAiSignature(secret: string, body: string | Buffer): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8'))
    .update(typeof body === 'string' ? Buffer.from(body, 'utf8') : body)
    .digest('base64')
}
