/**
 * Application passwords as WordPress stores and checks them (wp-includes/user.php,
 * class-wp-application-passwords.php): the Basic header PHP decodes, the password normalisation,
 * both hash formats, and the login sanitisation of get_user_by('login').
 */
import { blake2b } from '@noble/hashes/blake2'
import { checkWordPressPassword, constantTimeEqual } from './phpass.js'
import { isPhpArray, phpArrayGet, type PhpValue } from './php-unserialize.js'

// WordPress 6.8's wp_fast_hash(): sodium_crypto_generichash($message, 'wp_fast_hash_6.8+', 30).
const FAST_HASH_KEY = new TextEncoder().encode('wp_fast_hash_6.8+')
const FAST_HASH_PREFIX = '$generic$'

export interface BasicCredentials {
  username: string
  password: string
}

/**
 * The user and password PHP would put in PHP_AUTH_USER / PHP_AUTH_PW: a case-insensitive
 * `Basic ` scheme, lenient base64 (as php_base64_decode), split at the first colon.
 */
export function parseBasicAuthorization(header: string | undefined): BasicCredentials | undefined {
  if (!header || !/^basic /i.test(header)) return undefined
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}

/**
 * WordPress strips everything but ASCII letters and digits, so the chunked form shown at
 * creation ("abcd efgh …") works as well as the bare one. Generated passwords are alphanumeric.
 */
export function normalizeApplicationPassword(password: string): string {
  return password.replace(/[^a-z\d]/gi, '')
}

/** wp_fast_hash(): `$generic$` + base64url of a keyed 30-byte BLAKE2b (no padding is needed at 30 bytes). */
export function wpFastHash(message: string): string {
  const digest = blake2b(new TextEncoder().encode(message), { key: FAST_HASH_KEY, dkLen: 30 })
  return FAST_HASH_PREFIX + Buffer.from(digest).toString('base64url')
}

/**
 * WP_Application_Passwords::check_password(): `$generic$` hashes (6.8+) by BLAKE2b, older ones
 * through wp_check_password() (phpass `$P$`, legacy MD5).
 */
export function checkApplicationPassword(password: string, storedHash: string): boolean {
  if (storedHash.startsWith(FAST_HASH_PREFIX)) return constantTimeEqual(wpFastHash(password), storedHash)
  return checkWordPressPassword(password, storedHash)
}

/** The stored hashes from the unserialized `_application_passwords` user meta. */
export function applicationPasswordHashes(meta: PhpValue | undefined): string[] {
  if (!isPhpArray(meta)) return []
  const hashes: string[] = []
  for (const item of meta.values()) {
    const hash = isPhpArray(item) ? phpArrayGet(item, 'password') : undefined
    if (typeof hash === 'string' && hash !== '') hashes.push(hash)
  }
  return hashes
}

/** WordPress's is_email() (without its filters): the test that allows a login by e-mail. */
export function isEmail(text: string): boolean {
  if (text.length < 6) return false
  const at = text.indexOf('@', 1)
  if (at < 0) return false
  const local = text.slice(0, at)
  const domain = text.slice(at + 1)
  if (!/^[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+$/.test(local)) return false
  if (/\.{2,}/.test(domain)) return false
  if (domain.replace(/^[ \t\n\r\0\x0B.]+|[ \t\n\r\0\x0B.]+$/g, '') !== domain) return false
  const subs = domain.split('.')
  if (subs.length < 2) return false
  return subs.every((sub) => sub.replace(/^[ \t\n\r\0\x0B-]+|[ \t\n\r\0\x0B-]+$/g, '') === sub && /^[a-z0-9-]+$/i.test(sub))
}

/**
 * sanitize_user($login) as get_user_by('login') applies it, without remove_accents() (MySQL's
 * unicode_520_ci collation already matches accented letters to plain ones).
 */
export function sanitizeLogin(login: string): string {
  return login
    .replace(/<(script|style)[^>]*?>.*?<\/\1>/gis, '')
    .replace(/<[^>]*>/g, '')
    .replace(/%[a-fA-F0-9]{2}/g, '')
    .replace(/&.+?;/g, '')
    .trim()
    .replace(/\s+/g, ' ')
}
