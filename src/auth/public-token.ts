import { createHmac, timingSafeEqual, type KeyObject } from 'node:crypto'
import type { Principal } from './principal.js'
import { userOwnerKey } from './principal.js'

const MAX_LIFETIME_SECONDS = 24 * 3600
// SPEC §5: 16–128 of A-Z a-z 0-9 _ -. No `:` (it separates the parts of an owner key, so sid
// `V` with key `x:k` and sid `V:x` with key `k` would store the same key), and long enough that
// one visitor cannot guess another's.
export const SID_PATTERN = /^[A-Za-z0-9_-]{16,128}$/

export type TokenResult = { ok: true; principal: Principal } | { ok: false; reason: string }

const BASE64URL = /^[A-Za-z0-9_-]*$/
const SHA256_BYTES = 32

function decodeJson(segment: string): unknown {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
}

/**
 * A compact JWS signed HS256, checked with one HMAC and a constant-time compare. This is the hot
 * path of every token request: a general JOSE library converts the key on every verify, which
 * cost a seventh of the gateway's CPU under load. Only `HS256` is accepted, and a `crit` header
 * (an extension this code would have to understand) is refused, as RFC 7515 requires.
 */
export function verifyHs256(token: string, secret: Uint8Array | KeyObject): { ok: true; payload: Record<string, unknown> } | { ok: false; reason: string } {
  const parts = token.split('.')
  if (parts.length !== 3 || !parts.every((part) => BASE64URL.test(part)) || parts[0] === '' || parts[1] === '') {
    return { ok: false, reason: 'bad signature or malformed token' }
  }
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string]
  let header: unknown
  try {
    header = decodeJson(headerPart)
  } catch {
    return { ok: false, reason: 'bad signature or malformed token' }
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) return { ok: false, reason: 'bad signature or malformed token' }
  const h = header as Record<string, unknown>
  if (h.alg !== 'HS256') return { ok: false, reason: 'only HS256 tokens are accepted' }
  if (h.crit !== undefined || h.b64 !== undefined) return { ok: false, reason: 'bad signature or malformed token' }
  const expected = createHmac('sha256', secret).update(`${headerPart}.${payloadPart}`).digest()
  const given = Buffer.from(signaturePart, 'base64url')
  if (given.length !== SHA256_BYTES || !timingSafeEqual(expected, given)) return { ok: false, reason: 'bad signature or malformed token' }
  try {
    const payload = decodeJson(payloadPart)
    if (!payload || typeof payload !== 'object' || Array.isArray(payload)) return { ok: false, reason: 'claims are not an object' }
    return { ok: true, payload: payload as Record<string, unknown> }
  } catch {
    return { ok: false, reason: 'bad signature or malformed token' }
  }
}

/**
 * Verifies a signed public token (SPEC §5 item 3): HS256 only, `sub` and `exp` required, at most
 * 24 h of life, and a `sid` that becomes the owner when `sub` is 0. The claims are checked here
 * rather than by jose's JWT layer because WordPress may encode `sub` as a number.
 */
export async function verifyPublicToken(token: string, secret: Uint8Array | KeyObject, nowMs: number): Promise<TokenResult> {
  const verified = verifyHs256(token, secret)
  if (!verified.ok) return verified
  const payload = verified.payload

  const now = Math.floor(nowMs / 1000)
  const { exp, iat, nbf, sub, sid } = payload
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return { ok: false, reason: 'exp is required' }
  if (exp <= now) return { ok: false, reason: 'token expired' }
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > now)) return { ok: false, reason: 'token not yet valid' }
  if (iat !== undefined && (typeof iat !== 'number' || iat > now + 60)) return { ok: false, reason: 'iat is in the future' }
  // Without iat the life is measured from now, so a token can never outlive 24 h from its use.
  const issued = typeof iat === 'number' ? iat : now
  if (exp - issued > MAX_LIFETIME_SECONDS) return { ok: false, reason: 'token lifetime exceeds 24 h' }

  const subText = typeof sub === 'number' ? String(sub) : sub
  if (typeof subText !== 'string' || !/^(0|[1-9]\d{0,18})$/.test(subText)) return { ok: false, reason: 'sub must be a WordPress user id or 0' }
  const userId = Number(subText)
  if (!Number.isSafeInteger(userId)) return { ok: false, reason: 'sub is out of range' }

  let ownerKey = userOwnerKey(userId)
  if (userId === 0) {
    if (typeof sid !== 'string' || !SID_PATTERN.test(sid)) return { ok: false, reason: 'sid is required for anonymous tokens: 16 to 128 of A-Z a-z 0-9 _ -' }
    ownerKey = `s:${sid}`
  }
  return { ok: true, principal: { method: 'token', userId, ownerKey, canCreate: true, isAdmin: false } }
}
