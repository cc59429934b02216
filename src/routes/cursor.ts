import type { JobRow } from '../db/jobs-repository.js'
import { ApiError } from '../errors.js'

/** Keyset pagination: the (created_at, id) of the last row of a page, opaque to clients. */
export function encodeCursor(row: JobRow): string {
  return Buffer.from(JSON.stringify([row.created_at, row.id])).toString('base64url')
}

export function decodeCursor(cursor: string): { createdAt: string; id: number } {
  try {
    const [createdAt, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown]
    if (typeof createdAt === 'string' && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$/.test(createdAt) && Number.isSafeInteger(id) && (id as number) > 0) {
      return { createdAt, id: id as number }
    }
  } catch {
    // fall through
  }
  throw new ApiError('ai_invalid_request', 'cursor: is not a cursor this API returned', { details: { field: 'cursor', reason: 'malformed' } })
}

/** One extra row tells whether another page exists, without a COUNT. */
export function page<T extends JobRow>(rows: T[], limit: number): { rows: T[]; nextCursor: string | null } {
  const shown = rows.slice(0, limit)
  return { rows: shown, nextCursor: rows.length > limit ? encodeCursor(shown[shown.length - 1]!) : null }
}
