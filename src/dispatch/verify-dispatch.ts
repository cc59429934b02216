import { createHash, timingSafeEqual } from 'node:crypto'
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, type JSONWebKeySet, type JWTHeaderParameters, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import type { Clock } from '../clock.js'
import { MAX_DISPATCH_TOKEN_SECONDS } from './jwt.js'

/**
 * The worker's side of SPEC §5 "Dispatch to external workers": checks the Bearer JWT of a
 * dispatch POST against the gateway's JWKS and binds it to the exact body bytes.
 *
 * Replay guard: a token is refused when its (jti, iat, body_sha256) was already accepted and the
 * token could still be valid. Why these three:
 * - `jti` alone is wrong: it is the job's idempotency key, and a redispatch legitimately reuses it
 *   (with `attempt + 1`, so another body and another `body_sha256`).
 * - `iat` is included because the gateway may send the same body again after a dispatch it
 *   counted as failed (a timeout while the worker did receive it); that re-send carries a freshly
 *   signed token and must not be mistaken for a replay. An attacker cannot mint a new `iat`.
 * - The token string itself is not used: ECDSA signatures are malleable (s ↔ n − s), so a captured
 *   ES256 token can be re-encoded into a different, still valid string.
 * The guard is process memory: fit for one worker process, which is what the reference worker is.
 */

export interface DispatchTokenClaims {
  sub: string
  jti: string
  aud: string
  iat: number
  exp: number
  body_sha256: string
}

export type DispatchVerification =
  /** `kid` and `alg` are the verified token's header: which published key signed it. */
  | { ok: true; claims: DispatchTokenClaims; kid: string | undefined; alg: string }
  | { ok: false; reason: string }

export interface DispatchVerifierOptions {
  /** The gateway's `/.well-known/jwks.json`; fetched on first use and on an unknown `kid`. */
  jwksUrl?: string | URL
  /** A fixed key set instead of `jwksUrl`. */
  jwks?: JSONWebKeySet
  /** Must equal the token's `aud`: the `AI_WORKER_URL` the gateway posts to. */
  audience: string
  clock: Clock
  /**
   * How long an accepted token's (jti, iat, body_sha256) is remembered. Defaults to the longest a
   * token can stay valid: its 60 s lifetime plus the clock tolerance. Past that the token is
   * refused as expired anyway.
   */
  replayTtlMs?: number
  /** Allowed clock skew between gateway and worker, in seconds (default 5). */
  clockToleranceSeconds?: number
}

export interface DispatchVerifier {
  verify(authorization: string | undefined, rawBody: Buffer): Promise<DispatchVerification>
}

const DEFAULT_CLOCK_TOLERANCE_SECONDS = 5
const SWEEP_INTERVAL_MS = 10_000

/** Builds the verifier a worker runs on every dispatch POST. */
export function createDispatchVerifier(options: DispatchVerifierOptions): DispatchVerifier {
  const { audience, clock } = options
  const tolerance = options.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS
  const replayTtlMs = options.replayTtlMs ?? (MAX_DISPATCH_TOKEN_SECONDS + tolerance) * 1000
  const keySet = resolveKeySet(options)
  /** Replay key → time (ms) after which it may be forgotten. */
  const seen = new Map<string, number>()
  let nextSweepMs = 0

  function sweep(nowMs: number): void {
    if (nowMs < nextSweepMs) return
    nextSweepMs = nowMs + SWEEP_INTERVAL_MS
    for (const [key, forgetAtMs] of seen) if (forgetAtMs <= nowMs) seen.delete(key)
  }

  return {
    async verify(authorization, rawBody) {
      const match = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(authorization?.trim() ?? '')
      if (!match?.[1]) return { ok: false, reason: 'missing or malformed Bearer token' }

      const nowMs = clock.now()
      let payload: JWTPayload
      let header: JWTHeaderParameters
      try {
        ;({ payload, protectedHeader: header } = await jwtVerify(match[1], keySet, {
          algorithms: ['ES256', 'RS256'],
          audience,
          typ: 'JWT',
          currentDate: new Date(nowMs),
          clockTolerance: tolerance,
          requiredClaims: ['iat', 'exp', 'sub', 'jti', 'aud', 'body_sha256'],
        }))
      } catch (err) {
        // jose's messages name the failed check ("\"exp\" claim timestamp check failed", …) and
        // never include key material.
        return { ok: false, reason: err instanceof Error ? err.message : 'token verification failed' }
      }

      const claims = readClaims(payload)
      if (claims === undefined) return { ok: false, reason: 'token claims have the wrong types' }
      if (claims.exp - claims.iat > MAX_DISPATCH_TOKEN_SECONDS) {
        return { ok: false, reason: `token lives longer than ${MAX_DISPATCH_TOKEN_SECONDS} s` }
      }
      if (claims.iat * 1000 > nowMs + tolerance * 1000) return { ok: false, reason: 'token issued in the future' }

      const actual = createHash('sha256').update(rawBody).digest()
      const claimed = Buffer.from(claims.body_sha256, 'hex')
      if (claimed.length !== actual.length || !timingSafeEqual(claimed, actual)) {
        return { ok: false, reason: 'body_sha256 does not match the body' }
      }

      // Checked and recorded only after everything else passed, so a forged request cannot
      // burn a legitimate token's slot.
      sweep(nowMs)
      const replayKey = `${claims.jti}\n${claims.iat}\n${claims.body_sha256}`
      const forgetAtMs = seen.get(replayKey)
      if (forgetAtMs !== undefined && forgetAtMs > nowMs) return { ok: false, reason: 'token replayed' }
      seen.set(replayKey, Math.max(nowMs + replayTtlMs, (claims.exp + tolerance) * 1000))
      return { ok: true, claims, kid: header.kid, alg: header.alg }
    },
  }
}

function resolveKeySet(options: DispatchVerifierOptions): JWTVerifyGetKey {
  if (options.jwks !== undefined && options.jwksUrl !== undefined) throw new Error('give jwksUrl or jwks, not both')
  if (options.jwks !== undefined) return createLocalJWKSet(options.jwks)
  if (options.jwksUrl !== undefined) {
    // A cached set is refetched when a token names an unknown kid (a rotation), at most every 30 s.
    return createRemoteJWKSet(new URL(options.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 })
  }
  throw new Error('createDispatchVerifier needs jwksUrl or jwks')
}

function readClaims(payload: JWTPayload): DispatchTokenClaims | undefined {
  const { sub, jti, aud, iat, exp, body_sha256: body } = payload
  if (typeof sub !== 'string' || typeof jti !== 'string' || typeof aud !== 'string') return undefined
  if (typeof iat !== 'number' || typeof exp !== 'number' || typeof body !== 'string') return undefined
  if (!/^[0-9a-f]{64}$/.test(body)) return undefined
  return { sub, jti, aud, iat, exp, body_sha256: body }
}
