import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'

/**
 * Signed links to results stored outside the table (SPEC §12):
 * `{PUBLIC_URL}/wp-json/ai/v1/jobs/:id/result?exp=…&sig=…`. The signature alone authorizes the
 * download, so a link can be handed to a browser as is.
 */

/** The HKDF `info` that separates this key from every other use of AI_PUBLIC_TOKEN_SECRET. */
const KEY_INFO = 'wp-ai-gateway result link v1'

/**
 * The link key: HKDF-SHA256 over AI_PUBLIC_TOKEN_SECRET (its UTF-8 bytes, as the tokens use it)
 * with a fixed label, so a link signature can never stand in for a token signature or the reverse.
 */
export function resultLinkKey(publicTokenSecret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(publicTokenSecret, 'utf8'), Buffer.alloc(0), KEY_INFO, 32))
}

const HOUR_S = 3600

/**
 * The link's expiry in unix seconds: the next whole hour plus one hour. Every link made within one
 * clock hour is the same (so the job's ETag stays cacheable), and each lives 1 to 2 hours.
 */
export function resultLinkExp(nowMs: number): number {
  return (Math.floor(nowMs / 1000 / HOUR_S) + 2) * HOUR_S
}

/** base64url HMAC-SHA256 over `id.version.exp`. */
export function signResultLink(key: Buffer, id: number, version: number, exp: number): string {
  return createHmac('sha256', key).update(`${id}.${version}.${exp}`).digest('base64url')
}

/** The signature check, in constant time; the caller checks `exp` against its clock. */
export function verifyResultLink(key: Buffer, id: number, version: number, exp: number, sig: string): boolean {
  const expected = Buffer.from(signResultLink(key, id, version, exp), 'utf8')
  const given = Buffer.from(sig, 'utf8')
  // Lengths differ only for a malformed sig; timingSafeEqual needs equal lengths.
  if (given.length !== expected.length) return false
  return timingSafeEqual(given, expected)
}

export interface ResultLink {
  url: string
  /** Unix seconds; also part of the job's ETag. */
  exp: number
}

/** Makes the links of rows whose result is stored outside, at the clock's current hour. */
export interface ResultLinks {
  /** The link for a row with a `result_ref`; undefined for any other row, or with no link key. */
  forRow(row: { id: number; version: number; result_ref: string | null }): ResultLink | undefined
  /** A link's `sig` for this row and `exp`, checked in constant time (false with no link key). */
  verify(row: { id: number; version: number }, exp: number, sig: string): boolean
}

export function createResultLinks(options: { publicUrl: string; key: Buffer | undefined; now: () => number }): ResultLinks {
  const base = `${options.publicUrl}/wp-json/ai/v1/jobs`
  return {
    forRow(row) {
      if (row.result_ref === null || !options.key) return undefined
      const id = Number(row.id)
      const version = Number(row.version)
      const exp = resultLinkExp(options.now())
      return { url: `${base}/${id}/result?exp=${exp}&sig=${signResultLink(options.key, id, version, exp)}`, exp }
    },
    verify(row, exp, sig) {
      return options.key !== undefined && verifyResultLink(options.key, Number(row.id), Number(row.version), exp, sig)
    },
  }
}
