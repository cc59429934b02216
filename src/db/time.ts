/**
 * Job times are stored as UTC text with milliseconds, `YYYY-MM-DD HH:MM:SS.mmm`. MySQL's
 * DATETIME(3) takes and (with dateStrings) returns exactly this form, and on SQLite it sorts
 * lexicographically in time order, so the repository's comparisons work the same on both.
 */
export function toDbTime(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 23)
}

export function fromDbTime(value: string): number {
  // MySQL may return fewer fractional digits for DATETIME columns migrated from the seed.
  const [date, time = '00:00:00'] = value.split(' ')
  return Date.parse(`${date}T${time}${time.includes('.') ? '' : '.000'}Z`)
}

/**
 * ISO-8601 UTC with milliseconds. A seed row may hold MySQL's zero date ('0000-00-00 00:00:00'),
 * which is no instant at all: it is shown as the epoch rather than failing the whole response.
 */
export function toIsoTime(value: string): string {
  const ms = fromDbTime(value)
  return new Date(Number.isNaN(ms) ? 0 : ms).toISOString()
}
