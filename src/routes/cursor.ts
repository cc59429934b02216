import type { JobRow } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'

/** Keyset pagination: the (created_at, id) of the last row of a page, opaque to clients. */
export function encodeCursor(row: JobRow): string {
  return Buffer.from(JSON.stringify([row.created_at, row.id])).toString('base64url')
}

/** The cursor's two parts, or a 400 naming the field. */
function decoded(cursor: string): [unknown, unknown] {
  try {
    const parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown
    if (Array.isArray(parts) && parts.length === 2) return parts as [unknown, unknown]
  } catch {
    // not ours
  }
  throw malformed()
}

function malformed(): ApiError {
  return new ApiError('ai_invalid_request', 'cursor: is not a cursor this API returned', { details: { field: 'cursor', reason: 'malformed' } })
}

export function decodeCursor(cursor: string): { createdAt: string; id: number } {
  const [createdAt, id] = decoded(cursor)
  if (typeof createdAt === 'string' && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$/.test(createdAt) && Number.isSafeInteger(id) && (id as number) > 0) {
    return { createdAt, id: id as number }
  }
  throw malformed()
}

/** Keyset pagination by id alone (the events outbox, newest first): the last row's id, opaque to clients. */
export function encodeIdCursor(id: number): string {
  return Buffer.from(JSON.stringify(['e', id])).toString('base64url')
}

export function decodeIdCursor(cursor: string): number {
  const [tag, id] = decoded(cursor)
  if (tag === 'e' && Number.isSafeInteger(id) && (id as number) > 0) return id as number
  throw malformed()
}

/** One extra row tells whether another page exists, without a COUNT. */
export function page<T extends JobRow>(rows: T[], limit: number): { rows: T[]; nextCursor: string | null } {
  return pageBy(rows, limit, encodeCursor)
}

/** {@link page} for rows of any kind, with their own cursor. */
export function pageBy<T>(rows: T[], limit: number, encode: (last: T) => string): { rows: T[]; nextCursor: string | null } {
  const shown = rows.slice(0, limit)
  return { rows: shown, nextCursor: rows.length > limit ? encode(shown[shown.length - 1]!) : null }
}
