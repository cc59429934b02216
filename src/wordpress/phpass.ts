/**
 * Password hash checks for the formats application passwords are stored in.
 *
 * WordPress before 6.8 hashed application passwords with wp_hash_password(), which is phpass's
 * portable `$P$` scheme (phpBB's `$H$` is the same algorithm). Very old rows may hold a bare
 * 32-character MD5, which wp_check_password() still accepts.
 *
 * bcrypt (`$2y$`, and 6.8's `$wp$2y$` = bcrypt over base64(HMAC-SHA384(password, 'wp-sha384')))
 * is deliberately not implemented: WordPress 6.8 stores *login* passwords that way, and the
 * gateway never checks login passwords; it only reads the hash's last characters for the
 * cookie's pass_frag. Application passwords use `$generic$` from 6.8 on (see app-passwords.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto'

const ITOA64 = './0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
// phpass refuses passwords this long so a huge body cannot buy 8192 MD5 rounds over megabytes.
const MAX_PASSWORD_BYTES = 4096

/** Compares two strings in constant time for equal lengths (like PHP's hash_equals). */
export function constantTimeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a, 'utf8')
  const right = Buffer.from(b, 'utf8')
  if (left.length !== right.length) return false
  return timingSafeEqual(left, right)
}

// phpass's own base64 variant: little-endian groups of 3 bytes, ITOA64 alphabet, no padding.
function encode64(input: Buffer, count: number): string {
  let output = ''
  let i = 0
  do {
    let value = input[i++]!
    output += ITOA64[value & 0x3f]
    if (i < count) value |= input[i]! << 8
    output += ITOA64[(value >> 6) & 0x3f]
    if (i++ >= count) break
    if (i < count) value |= input[i]! << 16
    output += ITOA64[(value >> 12) & 0x3f]
    if (i++ >= count) break
    output += ITOA64[(value >> 18) & 0x3f]
  } while (i < count)
  return output
}

function md5(...parts: Buffer[]): Buffer {
  const hash = createHash('md5')
  for (const part of parts) hash.update(part)
  return hash.digest()
}

/**
 * phpass's crypt_private(): the portable hash of `password` under `setting` (the stored hash's
 * first 12 characters: `$P$`, the cost character, 8 salt characters). Returns `undefined` where
 * phpass would return its `*0`/`*1` failure marker.
 */
export function phpassCrypt(password: string, setting: string): string | undefined {
  const id = setting.slice(0, 3)
  if (id !== '$P$' && id !== '$H$') return undefined
  const countLog2 = ITOA64.indexOf(setting[3] ?? '')
  if (countLog2 < 7 || countLog2 > 30) return undefined
  const salt = setting.slice(4, 12)
  if (salt.length !== 8) return undefined
  const secret = Buffer.from(password, 'utf8')
  let hash = md5(Buffer.from(salt, 'latin1'), secret)
  for (let count = 2 ** countLog2; count > 0; count--) hash = md5(hash, secret)
  return setting.slice(0, 12) + encode64(hash, 16)
}

/** phpass CheckPassword() for `$P$`/`$H$` hashes (WordPress writes cost `B`: 2^13 = 8192 MD5 rounds). */
export function checkPhpass(password: string, storedHash: string): boolean {
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) return false
  const computed = phpassCrypt(password, storedHash)
  return computed !== undefined && constantTimeEqual(computed, storedHash)
}

/**
 * The part of wp_check_password() the gateway needs: legacy MD5 (hashes of 32 characters or
 * fewer, as WordPress decides) and phpass. Every other format (bcrypt, argon2) answers false.
 */
export function checkWordPressPassword(password: string, storedHash: string): boolean {
  if (storedHash.length <= 32) {
    return constantTimeEqual(storedHash, createHash('md5').update(password, 'utf8').digest('hex'))
  }
  if (storedHash.startsWith('$P$') || storedHash.startsWith('$H$')) return checkPhpass(password, storedHash)
  return false
}
