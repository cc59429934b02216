import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

const PREFIX = 'aes256gcm:'

/**
 * `request_json` at rest: plain JSON, or with AI_ENCRYPTION_KEY `aes256gcm:` + base64(iv | tag |
 * ciphertext). Rows written before the key was set stay readable; the stored idempotency key is the associated
 * data, so a ciphertext copied onto another row does not decrypt.
 */
export function sealRequest(json: string, key: Buffer | undefined, aad: string): string {
  if (!key) return json
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  cipher.setAAD(Buffer.from(aad))
  const body = Buffer.concat([cipher.update(json, 'utf8'), cipher.final()])
  return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')
}

export function openRequest(stored: string, key: Buffer | undefined, aad: string): string {
  if (!stored.startsWith(PREFIX)) return stored
  if (!key) throw new Error('request_json is encrypted but AI_ENCRYPTION_KEY is not set')
  const raw = Buffer.from(stored.slice(PREFIX.length), 'base64')
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12))
  decipher.setAAD(Buffer.from(aad))
  decipher.setAuthTag(raw.subarray(12, 28))
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')
}
