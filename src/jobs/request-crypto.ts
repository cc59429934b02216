import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

/** Every encrypted `request_json` starts with this; plain JSON starts with `{`. */
export const SEALED_PREFIX = 'aes256gcm:'

const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/
// Standard or URL-safe alphabet, as Node's base64 decoder reads both (the first form of the
// variable was decoded that way, so keys configured then still parse).
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/
const IV_BYTES = 12
const TAG_BYTES = 16

export interface EncryptionKey {
  /** `undefined` for the single bare key of the first form of AI_ENCRYPTION_KEY. */
  readonly id: string | undefined
  readonly key: Buffer
}

/** AI_ENCRYPTION_KEY, parsed. */
export interface Keyring {
  /** The first entry: new rows are sealed with it. */
  readonly current: EncryptionKey
  /** The entries that have an id, by id. */
  readonly byId: ReadonlyMap<string, Buffer>
  /** Every entry in the variable's order: tried in turn on a ciphertext that names no key. */
  readonly all: readonly EncryptionKey[]
}

/**
 * Parses AI_ENCRYPTION_KEY: either one bare key (base64 of 32 bytes) or `id:base64` entries,
 * comma-separated, the first one for new rows. Ids are 1–32 of `A-Z a-z 0-9 _ -`, unique even
 * ignoring case. Errors say which entry is wrong and never quote a key.
 */
export function parseKeyring(raw: string): Keyring {
  const entries = raw.split(',').map((s) => s.trim())
  const all: EncryptionKey[] = []
  const byId = new Map<string, Buffer>()
  const seen = new Map<string, string>()
  entries.forEach((entry, i) => {
    const where = entries.length > 1 ? `entry ${i + 1}: ` : ''
    if (entry === '') throw new Error(`${where}is empty`)
    const colon = entry.indexOf(':')
    if (colon < 0 && entries.length > 1) throw new Error(`${where}has no id: with more than one key, every entry is id:base64`)
    const id = colon < 0 ? undefined : entry.slice(0, colon)
    const encoded = colon < 0 ? entry : entry.slice(colon + 1)
    if (id !== undefined && !KEY_ID.test(id)) throw new Error(`${where}the key id must be 1 to 32 letters, digits, _ or -`)
    if (!BASE64.test(encoded)) throw new Error(`${where}the key must be base64 of exactly 32 bytes (openssl rand -base64 32)`)
    const key = Buffer.from(encoded, 'base64')
    if (key.length !== 32) throw new Error(`${where}the key must be base64 of exactly 32 bytes (openssl rand -base64 32), got ${key.length} bytes`)
    if (id !== undefined) {
      const earlier = seen.get(id.toLowerCase())
      if (earlier !== undefined) {
        throw new Error(`${where}${earlier === id ? `key id "${id}" is listed twice` : `key ids "${earlier}" and "${id}" differ only in case`}`)
      }
      seen.set(id.toLowerCase(), id)
      byId.set(id, key)
    }
    all.push({ id, key })
  })
  return { current: all[0]!, byId, all }
}

/** Why a stored request cannot be opened; `keyId` is the key the row names, if any. */
export class RequestUnreadable extends Error {
  constructor(message: string, readonly keyId: string | undefined) {
    super(message)
    this.name = 'RequestUnreadable'
  }
}

export type SealedForm =
  | { kind: 'plain' }
  /** `keyId` undefined: the first form, `aes256gcm:<base64>`, which names no key. */
  | { kind: 'sealed'; keyId: string | undefined; body: string }

/**
 * Reads the form of a stored `request_json` (or of its first few dozen characters): plain, or
 * sealed and under which key id. Base64 has no `:`, so a `:` after the prefix ends a key id.
 */
export function sealedForm(stored: string): SealedForm {
  if (!stored.startsWith(SEALED_PREFIX)) return { kind: 'plain' }
  const rest = stored.slice(SEALED_PREFIX.length)
  const colon = rest.indexOf(':')
  if (colon < 0) return { kind: 'sealed', keyId: undefined, body: rest }
  return { kind: 'sealed', keyId: rest.slice(0, colon), body: rest.slice(colon + 1) }
}

/** The start every row sealed with `key` has: `aes256gcm:<id>:`, or `aes256gcm:` for a key without an id. */
export function sealedPrefix(key: EncryptionKey): string {
  return key.id === undefined ? SEALED_PREFIX : `${SEALED_PREFIX}${key.id}:`
}

/**
 * `request_json` at rest: plain JSON, or with AI_ENCRYPTION_KEY `aes256gcm:<key id>:` +
 * base64(iv | tag | ciphertext) under the first key (`aes256gcm:` + base64 for a bare key, which
 * has no id). The stored idempotency key is the associated data, so a ciphertext copied onto
 * another row does not open there.
 */
export function sealRequest(json: string, keyring: Keyring | undefined, aad: string): string {
  if (!keyring) return json
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', keyring.current.key, iv)
  cipher.setAAD(Buffer.from(aad))
  const body = Buffer.concat([cipher.update(json, 'utf8'), cipher.final()])
  return sealedPrefix(keyring.current) + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')
}

function open(raw: Buffer, key: Buffer, aad: string): string | undefined {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES))
    decipher.setAAD(Buffer.from(aad))
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8')
  } catch {
    // GCM authenticates: a wrong key, another row's ciphertext or a damaged one all end here.
    return undefined
  }
}

/**
 * The plain JSON of a stored `request_json`. Plain rows come back as they are. A sealed row is
 * opened with the key it names; one that names none (written with a bare key) is tried with
 * each key in turn, which is safe because GCM refuses every key but the right one. Throws
 * RequestUnreadable, naming the key id, when the key is missing or does not open the row.
 */
export function openRequest(stored: string, keyring: Keyring | undefined, aad: string): string {
  const form = sealedForm(stored)
  if (form.kind === 'plain') return stored
  const { keyId } = form
  const named = keyId === undefined ? '' : ` with key "${keyId}"`
  if (keyId !== undefined && !KEY_ID.test(keyId)) throw new RequestUnreadable('the stored ciphertext is malformed (its key id is not valid)', undefined)
  if (!keyring) throw new RequestUnreadable(`request_json is encrypted${named} but AI_ENCRYPTION_KEY is not set`, keyId)
  const raw = BASE64.test(form.body) ? Buffer.from(form.body, 'base64') : Buffer.alloc(0)
  if (raw.length < IV_BYTES + TAG_BYTES) throw new RequestUnreadable(`the stored ciphertext${named} is malformed`, keyId)
  if (keyId !== undefined) {
    const key = keyring.byId.get(keyId)
    if (!key) throw new RequestUnreadable(`encryption key "${keyId}" is not in AI_ENCRYPTION_KEY`, keyId)
    const plain = open(raw, key, aad)
    if (plain === undefined) throw new RequestUnreadable(`encryption key "${keyId}" does not open it (the ciphertext is damaged or belongs to another row, or "${keyId}" now names another key)`, keyId)
    return plain
  }
  for (const { key } of keyring.all) {
    const plain = open(raw, key, aad)
    if (plain !== undefined) return plain
  }
  throw new RequestUnreadable('no key in AI_ENCRYPTION_KEY opens it (it names no key id; the key it was written with is missing, or the ciphertext is damaged or belongs to another row)', undefined)
}
