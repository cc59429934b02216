import { createHash } from 'node:crypto'
import { ApiError } from '../errors.js'
import type { Store } from '../store/types.js'
import { verifyWebhookSignature, type WebhookHeaders } from '../webhook/verify-signature.js'
import type { Principal } from './principal.js'

/**
 * Server-to-server calls from WordPress (SPEC §12): the companion plugin signs its privacy calls
 * the Standard Webhooks way with AI_EVENTS_SECRET, over the exact body bytes ('' for a GET). Only
 * the routes marked `admin-or-signed` accept them, in place of an admin login.
 */

/** |now − webhook-timestamp| allowed, in seconds. */
export const SIGNED_CALL_DRIFT_SECONDS = 300
/** A webhook-id is refused again for this long: twice the drift, so no timestamp still valid outlives it. */
export const SIGNED_CALL_REPLAY_MS = 2 * SIGNED_CALL_DRIFT_SECONDS * 1000

/** What a verified signed call acts as: no WordPress user, no capability beyond the route that took it. */
export const SIGNED_CALL_PRINCIPAL: Principal = Object.freeze({ method: 'signed', userId: 0, ownerKey: 'signed', canCreate: false, isAdmin: false })

/** A request claims to be a signed call when it carries a Standard Webhooks signature header. */
export function isSignedCall(headers: WebhookHeaders): boolean {
  return headers['webhook-signature'] !== undefined
}

/**
 * Verifies a signed call: the Standard Webhooks signature with the events secret, the timestamp
 * within 5 minutes, and a `webhook-id` never seen (kept in the shared store, so a replay to another
 * replica is refused too). Throws 403 `ai_invalid_signature` otherwise, saying which check failed.
 */
export async function verifySignedCall(options: { rawBody: Buffer; headers: WebhookHeaders; secret: string | undefined; nowMs: number; store: Store; keyPrefix?: string }): Promise<Principal> {
  if (!options.secret) throw new ApiError('ai_invalid_signature', 'Signed calls are off: AI_EVENTS_SECRET is not set.')
  // Only the three Standard Webhooks headers are looked at: the seed scheme (X-AI-Signature) is the workers', not WordPress's.
  const { headers } = options
  const standard = { 'webhook-id': headers['webhook-id'], 'webhook-timestamp': headers['webhook-timestamp'], 'webhook-signature': headers['webhook-signature'] }
  const verdict = verifyWebhookSignature({ rawBody: options.rawBody, headers: standard, secrets: [options.secret], nowMs: options.nowMs, driftSeconds: SIGNED_CALL_DRIFT_SECONDS })
  if (!verdict.ok || verdict.scheme !== 'standard') throw new ApiError('ai_invalid_signature', `Signature refused (${verdict.ok ? 'wrong scheme' : verdict.reason}).`)
  // Hashed: the id is the sender's text, and the key stays short whatever it holds.
  const key = `${options.keyPrefix ?? ''}signed-call:${createHash('sha256').update(verdict.replayKey).digest('hex')}`
  if (!(await options.store.setIfAbsent(key, '1', SIGNED_CALL_REPLAY_MS))) throw new ApiError('ai_invalid_signature', 'Signature refused (this webhook-id was used already).')
  return SIGNED_CALL_PRINCIPAL
}
