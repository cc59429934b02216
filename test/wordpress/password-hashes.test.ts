import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  applicationPasswordHashes, checkApplicationPassword, isEmail, normalizeApplicationPassword, parseBasicAuthorization,
  sanitizeLogin, wpFastHash,
} from '../../src/wordpress/application-passwords.js'
import { checkPhpass, checkWordPressPassword, phpassCrypt } from '../../src/wordpress/phpass.js'
import { maybeUnserialize } from '../../src/wordpress/php-unserialize.js'
import { authVectors as v } from '../support/wordpress-fixtures.js'

// Stored in wp_usermeta `_application_passwords` by WordPress 6.1.9 for alice and bob.
const ALICE_HASH = '$P$BzgSKdaR1K73J12orKfkzGqmUjeiuu1'
const BOB_HASH = '$P$BXpbIBnjX/iZ6CKSvDdOckpf/Hjihi1'
const [alice, bob] = v.application_passwords as [typeof v.application_passwords[0], typeof v.application_passwords[0]]

describe('phpass', () => {
  it('verifies the hashes WordPress wrote', () => {
    expect(checkPhpass(alice.password, ALICE_HASH)).toBe(true)
    expect(checkPhpass(bob.password, BOB_HASH)).toBe(true)
  })

  it('refuses another password, another hash, and a damaged hash', () => {
    expect(checkPhpass(bob.password, ALICE_HASH)).toBe(false)
    expect(checkPhpass(`${alice.password}x`, ALICE_HASH)).toBe(false)
    expect(checkPhpass(alice.password, `${ALICE_HASH.slice(0, -1)}2`)).toBe(false)
    expect(checkPhpass(alice.password, ALICE_HASH.slice(0, 20))).toBe(false)
  })

  it('treats phpBB\'s $H$ as the same algorithm', () => {
    const h = `$H$${ALICE_HASH.slice(3)}`
    expect(phpassCrypt(alice.password, h)).toBe(h)
    expect(checkPhpass(alice.password, h)).toBe(true)
  })

  it('refuses costs phpass refuses', () => {
    // "5" is 2^7 in itoa64 ("./0123456789…" index 7); "4" is 2^6, too cheap for phpass.
    expect(phpassCrypt('x', '$P$4abcdefgh')).toBeUndefined()
    expect(phpassCrypt('x', '$P$5abcdefgh')).toMatch(/^\$P\$5abcdefgh.{22}$/)
  })

  it('accepts legacy MD5 hashes like wp_check_password(), and nothing bcrypt', () => {
    const md5 = createHash('md5').update('secret').digest('hex')
    expect(checkWordPressPassword('secret', md5)).toBe(true)
    expect(checkWordPressPassword('Secret', md5)).toBe(false)
    expect(checkWordPressPassword('carol-password-123', v.wp68.cases[0]!.user_pass!)).toBe(false)
  })
})

describe('application password hashes', () => {
  it('computes WordPress 6.8\'s wp_fast_hash() ($generic$ keyed BLAKE2b)', () => {
    for (const c of v.wp68.cases.filter((x) => x.application_password)) {
      expect(wpFastHash(c.application_password!)).toBe(c.application_password_hash)
      expect(checkApplicationPassword(c.application_password!, c.application_password_hash!)).toBe(true)
      expect(checkApplicationPassword(c.application_password!.toLowerCase(), c.application_password_hash!)).toBe(false)
    }
  })

  it('checks phpass hashes through wp_check_password()', () => {
    expect(checkApplicationPassword(alice.password, ALICE_HASH)).toBe(true)
  })

  it('strips everything but letters and digits, so the chunked form matches', () => {
    expect(normalizeApplicationPassword(alice.chunked)).toBe(alice.password)
    expect(normalizeApplicationPassword('ab-cd_ef é!9')).toBe('abcdef9')
  })

  it('lists the hashes in the meta value', () => {
    const meta = maybeUnserialize('a:2:{i:0;a:2:{s:4:"uuid";s:1:"a";s:8:"password";s:34:"$P$BzgSKdaR1K73J12orKfkzGqmUjeiuu1";}i:1;s:3:"odd";}')
    expect(applicationPasswordHashes(meta)).toEqual([ALICE_HASH])
    expect(applicationPasswordHashes('')).toEqual([])
  })
})

describe('Basic header and login handling', () => {
  it('splits at the first colon like PHP', () => {
    const header = `Basic ${Buffer.from('alice:pa:ss').toString('base64')}`
    expect(parseBasicAuthorization(header)).toEqual({ username: 'alice', password: 'pa:ss' })
    expect(parseBasicAuthorization(`basic ${Buffer.from('a:b').toString('base64')}`)).toEqual({ username: 'a', password: 'b' })
  })

  it('refuses other schemes and values without a colon', () => {
    expect(parseBasicAuthorization('Bearer abc')).toBeUndefined()
    expect(parseBasicAuthorization(`Basic ${Buffer.from('alice').toString('base64')}`)).toBeUndefined()
    expect(parseBasicAuthorization(undefined)).toBeUndefined()
  })

  it('sanitizes logins as sanitize_user() does', () => {
    expect(sanitizeLogin('  alice  ')).toBe('alice')
    expect(sanitizeLogin('a  b')).toBe('a b')
    expect(sanitizeLogin('al%41ice')).toBe('alice')
    expect(sanitizeLogin('<b>alice</b>')).toBe('alice')
  })

  it('recognises e-mail addresses as is_email() does', () => {
    expect(isEmail('alice@example.com')).toBe(true)
    expect(isEmail('a@b.c')).toBe(false)
    expect(isEmail('alice@localhost')).toBe(false)
    expect(isEmail('alice@-example.com')).toBe(false)
    expect(isEmail('alice@example..com')).toBe(false)
    expect(isEmail('al ice@example.com')).toBe(false)
  })
})
