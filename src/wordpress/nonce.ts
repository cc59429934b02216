/**
 * wp_create_nonce() / wp_verify_nonce() (wp-includes/pluggable.php). A nonce is bound to the
 * action, the user id and the session token of the logged-in cookie, and to a "tick" of half
 * the nonce life, so one is valid for between half and the whole of `nonce_life`.
 */
import { createHmac } from 'node:crypto'
import { constantTimeEqual } from './phpass.js'

export const DEFAULT_NONCE_LIFE_SECONDS = 86_400

export interface NonceContext {
  action: string
  userId: number
  /** The session token from the logged_in cookie (wp_get_session_token()). */
  token: string
  /** Unix seconds. */
  nowSeconds: number
  /** wp_salt('nonce'). */
  salt: string
  nonceLifeSeconds?: number
}

/** wp_nonce_tick(): ceil(time() / (nonce_life / 2)). */
export function nonceTick(nowSeconds: number, nonceLifeSeconds = DEFAULT_NONCE_LIFE_SECONDS): number {
  return Math.ceil(nowSeconds / (nonceLifeSeconds / 2))
}

function nonceForTick(tick: number, ctx: NonceContext): string {
  // PHP's ceil() returns a float, but an integral float prints without ".0", so "41573|wp_rest|…".
  const data = `${tick}|${ctx.action}|${ctx.userId}|${ctx.token}`
  // wp_hash() is hash_hmac('md5', $data, wp_salt($scheme)); the nonce is characters -12..-3.
  const hash = createHmac('md5', ctx.salt).update(data, 'utf8').digest('hex')
  return hash.slice(-12, -2)
}

/** wp_create_nonce($action) for the user and session of `ctx` (for tests and tools). */
export function createNonce(ctx: NonceContext): string {
  return nonceForTick(nonceTick(ctx.nowSeconds, ctx.nonceLifeSeconds), ctx)
}

/**
 * wp_verify_nonce(): 1 when made in the current tick, 2 when made in the previous one, 0 (PHP's
 * false) otherwise. "" and "0" are refused up front, as PHP's empty() does.
 */
export function verifyNonce(nonce: string, ctx: NonceContext): 0 | 1 | 2 {
  if (nonce === '' || nonce === '0') return 0
  const tick = nonceTick(ctx.nowSeconds, ctx.nonceLifeSeconds)
  if (constantTimeEqual(nonceForTick(tick, ctx), nonce)) return 1
  if (constantTimeEqual(nonceForTick(tick - 1, ctx), nonce)) return 2
  return 0
}
