/** The injected clock and jitter source (STYLE: time and randomness are injected). */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
  /** A uniform random number in [0, 1). */
  random(): number
}

export const systemClock: Clock = {
  now: () => Date.now(),
  random: () => Math.random(),
}

/** A clock that tests move by hand. */
export function manualClock(startMs: number, random: () => number = () => 0.5): Clock & { advance(ms: number): void; set(ms: number): void } {
  let t = startMs
  return {
    now: () => t,
    random,
    advance(ms: number) {
      t += ms
    },
    set(ms: number) {
      t = ms
    },
  }
}
