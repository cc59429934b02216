/**
 * WordPress's tables may appear after the gateway started: docker compose starts it beside a
 * WordPress whose installer has not run yet. Until they are found, a request that needs them (a
 * WordPress cookie, Basic credentials, a token of a WordPress user) looks again, at most once
 * per `retryMs` per process, and WordPress authentication turns on when they are there.
 */
import type { WordPressAuthenticator, WordPressSource } from './authenticate.js'

/** How often a process looks again for tables it did not find (SPEC §5's cookies wait no longer). */
export const WORDPRESS_DETECT_RETRY_MS = 30_000

export interface LazyWordPressOptions {
  /** True when the tables were found at start-up. */
  foundAtStart: boolean
  /** The look for WordPress's user tables. */
  hasTables(): Promise<boolean>
  /** Builds the checks once the tables are there. */
  build(): WordPressAuthenticator
  now(): number
  retryMs?: number
  /** Told once, when tables missing at start-up were found. */
  onFound?(): void
}

/** Checks given by the caller (tests) and never looked for. */
export function fixedWordPressSource(wordpress: WordPressAuthenticator | undefined): WordPressSource {
  return { current: wordpress, detect: async () => wordpress }
}

/** Builds the checks now when the tables exist, or on the first request that finds them. */
export function lazyWordPressSource(options: LazyWordPressOptions): WordPressSource {
  const retryMs = options.retryMs ?? WORDPRESS_DETECT_RETRY_MS
  let current = options.foundAtStart ? options.build() : undefined
  let lastLook = options.now()
  let looking: Promise<WordPressAuthenticator | undefined> | undefined

  async function look(): Promise<WordPressAuthenticator | undefined> {
    try {
      if (!(await options.hasTables())) return undefined
    } catch (err) {
      // The database is down: the next request may look again, and this one answers the outage.
      lastLook = Number.NEGATIVE_INFINITY
      throw err
    }
    current ??= options.build()
    options.onFound?.()
    return current
  }

  return {
    get current() {
      return current
    },
    detect() {
      if (current) return Promise.resolve(current)
      if (looking) return looking
      const now = options.now()
      // |now - lastLook| so that a clock set back (tests) does not postpone the next look.
      if (Math.abs(now - lastLook) < retryMs) return Promise.resolve(undefined)
      lastLook = now
      looking = look().finally(() => {
        looking = undefined
      })
      return looking
    },
  }
}
