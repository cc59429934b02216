/** `If-None-Match` against a strong ETag (a weak form of the same tag matches too, as RFC 9110 lets GET do). */
export function ifNoneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false
  return header.split(',').some((tag) => {
    const t = tag.trim()
    return t === '*' || t === etag || t === `W/${etag}`
  })
}
