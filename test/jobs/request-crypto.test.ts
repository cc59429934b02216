/**
 * The stored form of `request_json` (SPEC §12): `aes256gcm:<key id>:<base64>` under the first key
 * of AI_ENCRYPTION_KEY, the first form `aes256gcm:<base64>` still read, plain rows as they are.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { openRequest, parseKeyring, RequestUnreadable, sealedForm, sealRequest, type Keyring } from '../../src/jobs/request-crypto.js'

const K1 = randomBytes(32)
const K2 = randomBytes(32)
const b64 = (k: Buffer) => k.toString('base64')
const REQUEST = JSON.stringify({ model: 'echo', input: 'the diary entry', params: {} })

/** Sealed by the gateway before keys had ids (one bare key, `aes256gcm:<base64>`), with this key and associated data. */
const EARLY_KEY = 'BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc='
const EARLY_AAD = 'an-early-idempotency-key'
const EARLY_ROW = 'aes256gcm:UmNTJgny0ZGdMhwGXEGxePP7tNu978AMN8qJS6lcjfEhLxV0I9gcbH3x6zysaMaD/DArpXAsrCmsq5aU5RMXtMzYcdWEb8QlIbb8RQl3hYadYH/w0Xo51h6cEtA4gA=='
const EARLY_PLAIN = { model: 'echo', input: 'written before keys had ids', params: {} }

function unreadable(fn: () => unknown): RequestUnreadable {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(RequestUnreadable)
    return err as RequestUnreadable
  }
  throw new Error('the row opened')
}

describe('sealing with key ids', () => {
  const ring = parseKeyring(`k2:${b64(K2)},k1:${b64(K1)}`)

  it('names the first key in each new row, and opens it with that key only', () => {
    const stored = sealRequest(REQUEST, ring, 'idem-1')
    expect(stored).toMatch(/^aes256gcm:k2:[A-Za-z0-9+/]+={0,2}$/)
    expect(stored).not.toContain('diary')
    expect(sealedForm(stored)).toMatchObject({ kind: 'sealed', keyId: 'k2' })
    expect(openRequest(stored, ring, 'idem-1')).toBe(REQUEST)
    // The same key under its id is all it takes; the order of the list does not matter to reads.
    expect(openRequest(stored, parseKeyring(`k1:${b64(K1)},k2:${b64(K2)}`), 'idem-1')).toBe(REQUEST)
  })

  it('rows under an older key open as long as the key is listed', () => {
    const old = sealRequest(REQUEST, parseKeyring(`k1:${b64(K1)}`), 'idem-2')
    expect(old.startsWith('aes256gcm:k1:')).toBe(true)
    expect(openRequest(old, ring, 'idem-2')).toBe(REQUEST)
  })

  it('the idempotency key stays bound: a ciphertext on another row does not open', () => {
    const stored = sealRequest(REQUEST, ring, 'idem-3')
    const err = unreadable(() => openRequest(stored, ring, 'idem-other'))
    expect(err.keyId).toBe('k2')
    expect(err.message).toMatch(/encryption key "k2" does not open it/)
  })

  it('a missing key is an error that names its id, never garbage', () => {
    const stored = sealRequest(REQUEST, parseKeyring(`gone:${b64(randomBytes(32))}`), 'idem-4')
    const err = unreadable(() => openRequest(stored, ring, 'idem-4'))
    expect(err.message).toBe('encryption key "gone" is not in AI_ENCRYPTION_KEY')
    expect(err.keyId).toBe('gone')
    expect(unreadable(() => openRequest(stored, undefined, 'idem-4')).message).toBe('request_json is encrypted with key "gone" but AI_ENCRYPTION_KEY is not set')
  })

  it('another key under a listed id fails to authenticate instead of decrypting to garbage', () => {
    const stored = sealRequest(REQUEST, parseKeyring(`k1:${b64(randomBytes(32))}`), 'idem-5')
    expect(unreadable(() => openRequest(stored, ring, 'idem-5')).message).toMatch(/encryption key "k1" does not open it/)
  })

  it('damaged ciphertexts are refused', () => {
    const stored = sealRequest(REQUEST, ring, 'idem-6')
    expect(unreadable(() => openRequest('aes256gcm:k2:AAAA', ring, 'idem-6')).message).toMatch(/malformed/)
    expect(unreadable(() => openRequest('aes256gcm:k2:not base64!', ring, 'idem-6')).message).toMatch(/malformed/)
    expect(unreadable(() => openRequest(`aes256gcm:bad id!:${stored.slice(13)}`, ring, 'idem-6')).message).toMatch(/malformed/)
    const flipped = stored.slice(0, -6) + (stored.at(-6) === 'A' ? 'B' : 'A') + stored.slice(-5)
    expect(unreadable(() => openRequest(flipped, ring, 'idem-6')).message).toMatch(/does not open it/)
  })

  it('plain rows are read as they are, with or without keys', () => {
    expect(openRequest(REQUEST, ring, 'x')).toBe(REQUEST)
    expect(openRequest(REQUEST, undefined, 'x')).toBe(REQUEST)
    expect(sealRequest(REQUEST, undefined, 'x')).toBe(REQUEST)
    expect(sealedForm(REQUEST)).toEqual({ kind: 'plain' })
  })
})

describe('rows of the first form (aes256gcm:<base64>, no key id)', () => {
  it('open with the bare key they were written with', () => {
    expect(JSON.parse(openRequest(EARLY_ROW, parseKeyring(EARLY_KEY), EARLY_AAD))).toEqual(EARLY_PLAIN)
  })

  it('open when that key is listed under any id, at any place: each key is tried, and GCM refuses the wrong ones', () => {
    for (const value of [`new:${b64(K2)},old:${EARLY_KEY}`, `v1:${EARLY_KEY}`, `a:${b64(K1)},b:${b64(K2)},c:${EARLY_KEY}`]) {
      expect(JSON.parse(openRequest(EARLY_ROW, parseKeyring(value), EARLY_AAD))).toEqual(EARLY_PLAIN)
    }
  })

  it('still bind the idempotency key, and fail clearly when no listed key opens them', () => {
    const ring = parseKeyring(`new:${b64(K2)},old:${EARLY_KEY}`)
    expect(unreadable(() => openRequest(EARLY_ROW, ring, 'another-row')).message).toMatch(/no key in AI_ENCRYPTION_KEY opens it \(it names no key id/)
    expect(unreadable(() => openRequest(EARLY_ROW, parseKeyring(`new:${b64(K2)}`), EARLY_AAD)).keyId).toBeUndefined()
  })

  it('are still what a bare key writes, so a gateway from before key ids reads them too', () => {
    const ring = parseKeyring(EARLY_KEY)
    const stored = sealRequest(REQUEST, ring, 'idem-7')
    expect(stored).toMatch(/^aes256gcm:[A-Za-z0-9+/]+={0,2}$/)
    expect(sealedForm(stored)).toMatchObject({ kind: 'sealed', keyId: undefined })
    expect(openRequest(stored, ring, 'idem-7')).toBe(REQUEST)
  })
})

describe('parseKeyring', () => {
  it('keeps the order, the first entry for new rows, and every id', () => {
    const ring: Keyring = parseKeyring(` k2:${b64(K2)} , k1:${b64(K1)} `)
    expect(ring.current.id).toBe('k2')
    expect(ring.current.key.equals(K2)).toBe(true)
    expect([...ring.byId.keys()]).toEqual(['k2', 'k1'])
    expect(ring.all.map((k) => k.id)).toEqual(['k2', 'k1'])
    const bare = parseKeyring(b64(K1))
    expect(bare.current.id).toBeUndefined()
    expect(bare.byId.size).toBe(0)
    // URL-safe base64 decodes to the same key, as the first form of the variable read it.
    expect(parseKeyring(`u:${K1.toString('base64url')}`).current.key.equals(K1)).toBe(true)
    expect(parseKeyring(`A-b_9:${b64(K1)}`).current.id).toBe('A-b_9')
    expect(parseKeyring(`${'x'.repeat(32)}:${b64(K1)}`).current.id).toHaveLength(32)
  })
})
