/**
 * Application passwords: `Authorization: Basic user:password`, checked as
 * wp_authenticate_application_password() does (wp-includes/user.php), plus what WordPress leaves
 * to plugins and the gateway must add: throttling of failed attempts and a short cache of
 * verified passwords.
 */
import { createHash } from 'node:crypto'
import type { Clock } from '../clock.js'
import type { Store } from '../store/types.js'
import {
  applicationPasswordHashes, checkApplicationPassword, isEmail, normalizeApplicationPassword, parseBasicAuthorization, sanitizeLogin,
} from '../wordpress/application-passwords.js'
import type { PhpValue } from '../wordpress/php-unserialize.js'
import { cachedReads, freshReads, type Reads } from './ttl-cache.js'

/** Failed attempts allowed per client address and per user within the window. */
export const DEFAULT_MAX_FAILURES = 10
export const DEFAULT_FAILURE_WINDOW_MS = 5 * 60_000
/** How long a verified password is trusted without re-hashing. At most 10 s (SPEC §5). */
export const DEFAULT_VERIFIED_CACHE_MS = 5_000
const MAX_VERIFIED_CACHE_MS = 10_000
const MAX_VERIFIED_ENTRIES = 10_000

export interface ApplicationPasswordUser {
  id: number
  login: string
}

export interface ApplicationPasswordOptions {
  store: Store
  clock: Clock
  /** get_user_by('login'), through the row cache; `reads` says whether to read past it. */
  findUserByLogin(login: string, reads: Reads): Promise<ApplicationPasswordUser | undefined>
  findUserByEmail(email: string, reads: Reads): Promise<ApplicationPasswordUser | undefined>
  /** The user's `_application_passwords` meta, unserialized. Read fresh: revocation must bite. */
  applicationPasswords(userId: number): Promise<PhpValue | undefined>
  maxFailures?: number
  failureWindowMs?: number
  verifiedCacheMs?: number
}

export type ApplicationPasswordRefusal = 'malformed' | 'unknown_user' | 'incorrect_password'

export type ApplicationPasswordResult =
  | { kind: 'user'; userId: number; login: string }
  | { kind: 'invalid'; reason: ApplicationPasswordRefusal }
  | { kind: 'throttled'; retryAfterSeconds: number }

export interface ApplicationPasswordAuthenticator {
  authenticate(authorizationHeader: string | undefined, clientIp: string): Promise<ApplicationPasswordResult>
  /** Forgets verified passwords (on SIGHUP, or in tests). */
  clear(): void
}

function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex')
}

const FAILURE_PREFIX = 'wp-auth-fail'

/**
 * Checks Basic credentials.
 *
 * Throttle: failed attempts are counted in the shared store for `failureWindowMs` from the first
 * failure, per client address and per user: the user the name resolves to (so `bob`, `<b>bob`,
 * ` bob`, `BOB` and `bob@example.com` share one counter), or, for a name no user answers to, the
 * name as get_user_by('login') compares it (sanitised, lower-cased). The attempt that reaches
 * `maxFailures` and every one after it in that window answer `throttled`, even with a correct
 * password (otherwise the throttle would still answer the guess). The throttle is checked
 * before the cache of verified passwords, so a success cached a moment ago cannot skip it, and
 * the address is checked first of all, so a throttled client costs no user lookup.
 *
 * A verified password is kept in process memory for `verifiedCacheMs`, keyed by a SHA-256 of the
 * user id and password, so phpass's 8192 MD5 rounds are paid once per credential and window
 * instead of once per request.
 *
 * Caches may delay a revocation, never a grant (SPEC §5): a name that the cached user rows do
 * not know, or whose cached user does not hold the password, is looked up again past the cache
 * before the attempt is refused.
 */
export function createApplicationPasswordAuthenticator(options: ApplicationPasswordOptions): ApplicationPasswordAuthenticator {
  const maxFailures = options.maxFailures ?? DEFAULT_MAX_FAILURES
  const windowMs = options.failureWindowMs ?? DEFAULT_FAILURE_WINDOW_MS
  const cacheMs = Math.min(options.verifiedCacheMs ?? DEFAULT_VERIFIED_CACHE_MS, MAX_VERIFIED_CACHE_MS)
  const verified = new Map<string, { userId: number; login: string; expiresAt: number }>()
  const { store, clock } = options

  function cacheGet(key: string): { userId: number; login: string } | undefined {
    const hit = verified.get(key)
    if (!hit) return undefined
    if (hit.expiresAt > clock.now()) return { userId: hit.userId, login: hit.login }
    verified.delete(key)
    return undefined
  }

  function cacheSet(key: string, user: ApplicationPasswordUser): void {
    if (cacheMs <= 0) return
    if (verified.size >= MAX_VERIFIED_ENTRIES) {
      const now = clock.now()
      for (const [k, v] of verified) if (v.expiresAt <= now) verified.delete(k)
      // Still full: drop the oldest insertion (Map keeps insertion order).
      if (verified.size >= MAX_VERIFIED_ENTRIES) verified.delete(verified.keys().next().value!)
    }
    verified.set(key, { userId: user.id, login: user.login, expiresAt: clock.now() + cacheMs })
  }

  const addressKey = (clientIp: string) => `${FAILURE_PREFIX}:ip:${clientIp || 'unknown'}`

  /** The counter of the user the name resolves to, or of the name when none does. */
  function subjectKey(username: string, user: ApplicationPasswordUser | undefined): string {
    // Logins compare case-insensitively in WordPress's MySQL collation, so "Alice" is alice.
    return user ? `${FAILURE_PREFIX}:user:${user.id}` : `${FAILURE_PREFIX}:login:${sha256(sanitizeLogin(username).toLowerCase())}`
  }

  /** The keys among `keys` whose count has reached the limit. */
  async function throttledKeys(keys: string[]): Promise<string[]> {
    const counts = await Promise.all(keys.map((key) => store.get(key)))
    return keys.filter((_key, i) => counts[i] !== null && Number(counts[i]) >= maxFailures)
  }

  /** Seconds until every counter in `keys` (the throttled ones) has run out. */
  async function throttledFor(keys: string[]): Promise<ApplicationPasswordResult> {
    const starts = await Promise.all(keys.map((key) => store.get(`${key}:since`)))
    const now = clock.now()
    const remainingMs = Math.max(...starts.map((s) => (s === null ? windowMs : Number(s) + windowMs - now)))
    const seconds = Math.min(Math.max(Math.ceil(remainingMs / 1000), 1), Math.ceil(windowMs / 1000))
    return { kind: 'throttled', retryAfterSeconds: seconds }
  }

  /** Counts one failure on every key; answers the keys that have now reached the limit. */
  async function recordFailure(keys: string[]): Promise<string[]> {
    const counts = await Promise.all(keys.map((key) => store.increment(key, windowMs)))
    await Promise.all(keys.map((key, i) => (counts[i] === 1 ? store.set(`${key}:since`, String(clock.now()), windowMs) : undefined)))
    return keys.filter((_key, i) => counts[i]! >= maxFailures)
  }

  async function findUser(username: string, reads: Reads): Promise<ApplicationPasswordUser | undefined> {
    const login = sanitizeLogin(username)
    const user = login === '' ? undefined : await options.findUserByLogin(login, reads)
    // wp_authenticate_application_password(): a name that is no login but is an e-mail address
    // is tried as the user's e-mail.
    if (!user && isEmail(username)) return options.findUserByEmail(username, reads)
    return user
  }

  async function holdsPassword(user: ApplicationPasswordUser, password: string): Promise<boolean> {
    const hashes = applicationPasswordHashes(await options.applicationPasswords(user.id))
    // WordPress stops at the first match; checking every hash would cost the same on failure.
    return hashes.some((hash) => checkApplicationPassword(password, hash))
  }

  const verifiedKey = (user: ApplicationPasswordUser, password: string) => sha256(`${user.id}:${password}`)

  return {
    async authenticate(authorizationHeader, clientIp) {
      const credentials = parseBasicAuthorization(authorizationHeader)
      if (!credentials) return { kind: 'invalid', reason: 'malformed' }
      const { username } = credentials
      const password = normalizeApplicationPassword(credentials.password)

      const ipKey = addressKey(clientIp)
      const ipThrottled = await throttledKeys([ipKey])
      if (ipThrottled.length > 0) return throttledFor(ipThrottled)

      let reads = cachedReads()
      let user = await findUser(username, reads)
      if (!user && reads.servedFromCache) {
        reads = freshReads()
        user = await findUser(username, reads)
      }
      let userKey = subjectKey(username, user)
      let throttled = await throttledKeys([userKey])
      if (throttled.length > 0) return throttledFor(throttled)

      let reason: ApplicationPasswordRefusal = user ? 'incorrect_password' : 'unknown_user'
      if (user && password !== '') {
        const hit = cacheGet(verifiedKey(user, password))
        if (hit) return { kind: 'user', ...hit }
        let holds = await holdsPassword(user, password)
        // The meta was read fresh, but the login may name another user now (deleted and
        // created again, renamed): look it up past the cache before refusing.
        if (!holds && reads.servedFromCache) {
          const current = await findUser(username, freshReads())
          if (current?.id !== user.id) {
            user = current
            userKey = subjectKey(username, user)
            throttled = await throttledKeys([userKey])
            if (throttled.length > 0) return throttledFor(throttled)
            holds = user !== undefined && await holdsPassword(user, password)
            if (!user) reason = 'unknown_user'
          }
        }
        if (holds && user) {
          cacheSet(verifiedKey(user, password), user)
          await store.del(userKey)
          return { kind: 'user', userId: user.id, login: user.login }
        }
      }
      const reached = await recordFailure([ipKey, userKey])
      if (reached.length > 0) return throttledFor(reached)
      return { kind: 'invalid', reason }
    },
    clear() {
      verified.clear()
    },
  }
}
