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
  type BasicCredentials,
} from '../wordpress/application-passwords.js'
import type { PhpValue } from '../wordpress/php-unserialize.js'
import { cachedReads, freshReads, type Reads } from './ttl-cache.js'

/** Failed attempts allowed per client address and per login within the window. */
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

/**
 * Checks Basic credentials. Failed attempts are counted in the shared store per client address
 * and per login for `failureWindowMs` from the first failure; the attempt that reaches
 * `maxFailures` and every one after it in that window answer `throttled`, even with a correct
 * password (otherwise the throttle would still answer the guess). A verified password is kept
 * in process memory for `verifiedCacheMs`, keyed by a SHA-256 of login and password, so phpass's
 * 8192 MD5 rounds are paid once per credential and window instead of once per request.
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
    if (hit.expiresAt > clock.now()) return hit
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

  function failureKeys(username: string, clientIp: string): string[] {
    // Logins compare case-insensitively in WordPress's MySQL collation, so "Alice" is alice.
    return [`wp-auth-fail:ip:${clientIp || 'unknown'}`, `wp-auth-fail:login:${sha256(username.toLowerCase())}`]
  }

  async function retryAfter(keys: string[]): Promise<number> {
    const starts = await Promise.all(keys.map((key) => store.get(`${key}:since`)))
    const since = Math.min(...starts.map((s) => (s === null ? clock.now() : Number(s))))
    const seconds = Math.ceil((since + windowMs - clock.now()) / 1000)
    return Math.min(Math.max(seconds, 1), Math.ceil(windowMs / 1000))
  }

  async function throttled(keys: string[]): Promise<boolean> {
    const counts = await Promise.all(keys.map((key) => store.get(key)))
    return counts.some((count) => count !== null && Number(count) >= maxFailures)
  }

  async function recordFailure(keys: string[]): Promise<boolean> {
    const counts = await Promise.all(keys.map((key) => store.increment(key, windowMs)))
    await Promise.all(keys.map((key, i) => (counts[i] === 1 ? store.set(`${key}:since`, String(clock.now()), windowMs) : undefined)))
    return counts.some((count) => count >= maxFailures)
  }

  async function findUser(username: string, reads: Reads): Promise<ApplicationPasswordUser | undefined> {
    const login = sanitizeLogin(username)
    const user = login === '' ? undefined : await options.findUserByLogin(login, reads)
    // wp_authenticate_application_password(): a name that is no login but is an e-mail address
    // is tried as the user's e-mail.
    if (!user && isEmail(username)) return options.findUserByEmail(username, reads)
    return user
  }

  async function verifyFor(user: ApplicationPasswordUser | undefined, password: string): Promise<ApplicationPasswordResult> {
    if (!user) return { kind: 'invalid', reason: 'unknown_user' }
    const hashes = applicationPasswordHashes(await options.applicationPasswords(user.id))
    // WordPress stops at the first match; checking every hash would cost the same on failure.
    for (const hash of hashes) {
      if (checkApplicationPassword(password, hash)) return { kind: 'user', userId: user.id, login: user.login }
    }
    return { kind: 'invalid', reason: 'incorrect_password' }
  }

  async function verify(credentials: BasicCredentials, password: string): Promise<ApplicationPasswordResult> {
    const reads = cachedReads()
    const user = await findUser(credentials.username, reads)
    const result = await verifyFor(user, password)
    if (result.kind === 'user' || !reads.servedFromCache) return result
    // The cached rows may lack a user created since, or name another user now (deleted and
    // created again, renamed); the password meta itself was read fresh.
    const current = await findUser(credentials.username, freshReads())
    return current?.id === user?.id ? result : verifyFor(current, password)
  }

  return {
    async authenticate(authorizationHeader, clientIp) {
      const credentials = parseBasicAuthorization(authorizationHeader)
      if (!credentials) return { kind: 'invalid', reason: 'malformed' }
      const password = normalizeApplicationPassword(credentials.password)
      const cacheKey = sha256(`${credentials.username}:${password}`)
      const cached = cacheGet(cacheKey)
      // A cached success is no guess, so it skips the throttle and its store round trips.
      if (cached) return { kind: 'user', ...cached }

      const keys = failureKeys(credentials.username, clientIp)
      if (await throttled(keys)) return { kind: 'throttled', retryAfterSeconds: await retryAfter(keys) }
      const result = password === '' ? { kind: 'invalid', reason: 'incorrect_password' } as const : await verify(credentials, password)
      if (result.kind === 'user') {
        cacheSet(cacheKey, { id: result.userId, login: result.login })
        await store.del(keys[1]!)
        return result
      }
      if (await recordFailure(keys)) return { kind: 'throttled', retryAfterSeconds: await retryAfter(keys) }
      return result
    },
    clear() {
      verified.clear()
    },
  }
}
