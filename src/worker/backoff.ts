/** Job-level backoff before the next attempt: exponential from 1 s, capped at 5 min, full jitter. */
export function jobBackoffMs(attempts: number, random: number): number {
  const ceiling = Math.min(300_000, 1000 * 2 ** Math.max(0, attempts - 1))
  // At least 250 ms so a flapping provider is not hammered by an instant re-claim.
  return Math.max(250, Math.floor(random * ceiling))
}
