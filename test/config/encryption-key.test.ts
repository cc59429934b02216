/**
 * AI_ENCRYPTION_KEY (SPEC §2, §12): a bare key or `id:base64` entries. A bad value stops start-up
 * with one line that names the variable and never quotes a key.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../../src/config.js'

const DB = 'sqlite:/tmp/gw-encryption-key-config.sqlite'
const KEY = randomBytes(32).toString('base64')
const OTHER = randomBytes(32).toString('base64')
const SHORT = randomBytes(16).toString('base64')
const LONG = randomBytes(33).toString('base64')

function refused(value: string): ConfigError {
  try {
    loadConfig({ DATABASE_URL: DB, AI_ENCRYPTION_KEY: value })
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error(`AI_ENCRYPTION_KEY=${value} was accepted`)
}

describe('AI_ENCRYPTION_KEY', () => {
  it('takes a bare key (rows name no key) or id:base64 entries, the first for new rows', () => {
    const bare = loadConfig({ DATABASE_URL: DB, AI_ENCRYPTION_KEY: KEY }).encryptionKeys!
    expect(bare.current.id).toBeUndefined()
    expect(bare.current.key.toString('base64')).toBe(KEY)
    const ring = loadConfig({ DATABASE_URL: DB, AI_ENCRYPTION_KEY: `2025b:${OTHER},2025a:${KEY}` }).encryptionKeys!
    expect(ring.current.id).toBe('2025b')
    expect(ring.byId.get('2025a')?.toString('base64')).toBe(KEY)
    expect(loadConfig({ DATABASE_URL: DB }).encryptionKeys).toBeUndefined()
  })

  it.each([
    ['a key of 16 bytes', SHORT, /base64 of exactly 32 bytes .*got 16 bytes/],
    ['a key of 33 bytes under an id', `k1:${LONG}`, /base64 of exactly 32 bytes .*got 33 bytes/],
    ['text that is not base64', `k1:${KEY.slice(0, 20)}!${KEY.slice(21)}`, /must be base64/],
    ['an empty id', `:${KEY}`, /key id must be 1 to 32/],
    ['an id with a space', `my key:${KEY}`, /key id must be 1 to 32/],
    ['an id of 33 characters', `${'k'.repeat(33)}:${KEY}`, /key id must be 1 to 32/],
    ['an id listed twice', `k1:${KEY},k1:${OTHER}`, /entry 2: key id "k1" is listed twice/],
    ['ids that differ only in case', `k1:${KEY},K1:${OTHER}`, /key ids "k1" and "K1" differ only in case/],
    ['a bare key among id entries', `k2:${OTHER},${KEY}`, /entry 2: has no id/],
    ['an empty entry', `k2:${OTHER},,k1:${KEY}`, /entry 2: is empty/],
    ['a bad second entry', `k2:${OTHER},k1:${SHORT}`, /entry 2: the key must be base64/],
  ])('refuses %s in one line naming the variable, without the key', (_why, value, message) => {
    const err = refused(value)
    expect(err.variable).toBe('AI_ENCRYPTION_KEY')
    expect(err.message.startsWith('AI_ENCRYPTION_KEY: ')).toBe(true)
    expect(err.message).not.toContain('\n')
    expect(err.message).toMatch(message)
    for (const secret of [KEY, OTHER, SHORT, LONG, KEY.slice(0, 20), KEY.slice(21)]) expect(err.message).not.toContain(secret)
  })
})
