import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto'
import { SignJWT, type JWK } from 'jose'

/**
 * The keys and tokens that authenticate dispatches to external workers (SPEC §5 "Dispatch to
 * external workers"). Workers verify them against the JWKS served at `/.well-known/jwks.json`.
 */

export type DispatchAlgorithm = 'ES256' | 'RS256'

/** A public JWK as published: always with `kid`, `alg` and `use`. */
export type PublishedJwk = JWK & { kid: string; alg: DispatchAlgorithm; use: 'sig' }

export interface DispatchSigningKey {
  readonly alg: DispatchAlgorithm
  readonly kid: string
  readonly privateKey: KeyObject
  readonly publicJwk: PublishedJwk
  /** The retired key still published during a rotation (`AI_JWT_PREVIOUS_PUBLIC_KEY`). */
  readonly previousPublicJwk: PublishedJwk | undefined
}

export interface LoadSigningKeyOptions {
  /** `AI_JWT_PRIVATE_KEY`: PEM, EC P-256 or RSA (2048 bits or more). */
  privateKeyPem?: string | undefined
  /** `AI_JWT_KID`; defaults to the key's RFC 7638 thumbprint. */
  kid?: string | undefined
  /** `AI_JWT_PREVIOUS_PUBLIC_KEY`: PEM of the retired key (a private key PEM is accepted too). */
  previousPublicKeyPem?: string | undefined
  /** `AI_JWT_PREVIOUS_KID`; defaults to the retired key's thumbprint. */
  previousKid?: string | undefined
}

/** SPEC: `exp` is no more than 60 s after `iat`. */
export const MAX_DISPATCH_TOKEN_SECONDS = 60
// jose refuses RS256 keys below this, and so does every current guideline.
const MIN_RSA_BITS = 2048

/**
 * Loads the dispatch signing key from configuration. The algorithm follows the key: EC P-256
 * signs ES256, RSA signs RS256; any other key stops start-up with a message naming the variable.
 */
export function loadSigningKey(options: LoadSigningKeyOptions): DispatchSigningKey {
  const pem = options.privateKeyPem === undefined ? '' : normalizePem(options.privateKeyPem)
  if (pem === '') throw new Error('AI_JWT_PRIVATE_KEY is not set: a PEM private key (EC P-256 or RSA) is required to sign dispatch JWTs')

  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' })
  } catch {
    // The parser's message can quote key material; keep only our own words.
    throw new Error('AI_JWT_PRIVATE_KEY is not a readable, unencrypted PEM private key')
  }
  const alg = algorithmFor(privateKey, 'AI_JWT_PRIVATE_KEY')
  const kid = checkKid(options.kid, 'AI_JWT_KID')
  const current = publishedJwk(createPublicKey(privateKey), alg, kid)

  let previous: PublishedJwk | undefined
  const previousPem = options.previousPublicKeyPem === undefined ? '' : normalizePem(options.previousPublicKeyPem)
  if (previousPem !== '') {
    let previousKey: KeyObject
    try {
      previousKey = createPublicKey({ key: previousPem, format: 'pem' })
    } catch {
      throw new Error('AI_JWT_PREVIOUS_PUBLIC_KEY is not a readable PEM public key')
    }
    const previousAlg = algorithmFor(previousKey, 'AI_JWT_PREVIOUS_PUBLIC_KEY')
    previous = publishedJwk(previousKey, previousAlg, checkKid(options.previousKid, 'AI_JWT_PREVIOUS_KID'))
    if (previous.kid === current.kid) {
      throw new Error('AI_JWT_PREVIOUS_KID must differ from AI_JWT_KID: workers pick the key by kid')
    }
  } else if (options.previousKid !== undefined && options.previousKid !== '') {
    throw new Error('AI_JWT_PREVIOUS_KID is set but AI_JWT_PREVIOUS_PUBLIC_KEY is not')
  }

  return Object.freeze({ alg, kid: current.kid, privateKey, publicJwk: current, previousPublicJwk: previous })
}

/**
 * A fresh EC P-256 key for the embedded default only (SPEC §2): replicas must share one key, so
 * nothing else may generate it. The kid is the key's JWK thumbprint.
 */
export function generateDevSigningKey(): DispatchSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const publicJwk = publishedJwk(publicKey, 'ES256', undefined)
  return Object.freeze({ alg: 'ES256', kid: publicJwk.kid, privateKey, publicJwk, previousPublicJwk: undefined })
}

export interface DispatchClaims {
  /** The job's user id (`0` for anonymous), sent as a string as JWT `sub` requires. */
  sub: string | number
  /** The job's stored 64-hex idempotency key. */
  jti: string
  /** `AI_WORKER_URL`. */
  aud: string
  /** Hex sha256 of the exact body bytes sent with the token. */
  bodySha256: string
  nowMs: number
  /** At most 60 (the default). */
  ttlSeconds?: number
}

/** Signs the Bearer token of one dispatch POST. */
export async function signDispatchJwt(key: DispatchSigningKey, claims: DispatchClaims): Promise<string> {
  const ttl = claims.ttlSeconds ?? MAX_DISPATCH_TOKEN_SECONDS
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_DISPATCH_TOKEN_SECONDS) {
    throw new RangeError(`dispatch token lifetime must be 1–${MAX_DISPATCH_TOKEN_SECONDS} s, got ${ttl}`)
  }
  if (!/^[0-9a-f]{64}$/.test(claims.bodySha256)) throw new TypeError('bodySha256 must be 64 lowercase hex characters')
  const iat = Math.floor(claims.nowMs / 1000)
  return new SignJWT({ body_sha256: claims.bodySha256 })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttl)
    .setSubject(String(claims.sub))
    .setJti(claims.jti)
    .setAudience(claims.aud)
    .sign(key.privateKey)
}

/** Hex sha256 of the body bytes, as the `body_sha256` claim carries it. */
export function bodySha256(body: string | Buffer): string {
  return createHash('sha256').update(body).digest('hex')
}

/** The JWKS served at `/.well-known/jwks.json`: the current key, then the retired one if any. */
export function buildJwks(key: DispatchSigningKey): { keys: PublishedJwk[] } {
  const keys = [{ ...key.publicJwk }]
  if (key.previousPublicJwk !== undefined) keys.push({ ...key.previousPublicJwk })
  return { keys }
}

function algorithmFor(key: KeyObject, variable: string): DispatchAlgorithm {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve
    if (curve === 'prime256v1') return 'ES256'
    throw new Error(`${variable} is an EC key on ${curve ?? 'an unknown curve'}; only P-256 (ES256) or RSA (RS256) keys are supported`)
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < MIN_RSA_BITS) throw new Error(`${variable} is a ${bits}-bit RSA key; RS256 needs at least ${MIN_RSA_BITS} bits`)
    return 'RS256'
  }
  throw new Error(`${variable} is a ${key.asymmetricKeyType ?? 'non-asymmetric'} key; only EC P-256 (ES256) or RSA (RS256) keys are supported`)
}

function publishedJwk(publicKey: KeyObject, alg: DispatchAlgorithm, kid: string | undefined): PublishedJwk {
  const exported = publicKey.export({ format: 'jwk' })
  // Only the public members; node's export of a public key has no private ones, but be explicit.
  const base: JWK =
    exported.kty === 'EC'
      ? { kty: 'EC', crv: exported.crv, x: exported.x, y: exported.y }
      : { kty: 'RSA', n: exported.n, e: exported.e }
  return { ...base, kid: kid ?? jwkThumbprint(base), alg, use: 'sig' }
}

/** RFC 7638 thumbprint (SHA-256, base64url) over the required members in lexicographic order. */
function jwkThumbprint(jwk: JWK): string {
  const members = jwk.kty === 'EC' ? { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y } : { e: jwk.e, kty: jwk.kty, n: jwk.n }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url')
}

function checkKid(kid: string | undefined, variable: string): string | undefined {
  if (kid === undefined || kid === '') return undefined
  // It travels in a JWT header and is matched byte for byte by workers: keep it plain.
  if (!/^[\x21-\x7e]{1,128}$/.test(kid)) throw new Error(`${variable} must be 1–128 printable ASCII characters without spaces`)
  return kid
}

/** Env files often carry a PEM on one line with literal `\n`; turn those back into newlines. */
function normalizePem(pem: string): string {
  const trimmed = pem.trim()
  return trimmed.includes('\n') ? trimmed : trimmed.replace(/\\n/g, '\n')
}
