import { describe, expect, it } from 'vitest'
import { wpSalt, type SaltSettings } from '../../src/wordpress/salts.js'

const options = (values: Record<string, string>) => async (name: string) => values[name]
const noOptions = options({})

describe('wp_salt()', () => {
  it('joins the scheme\'s KEY and SALT constants', async () => {
    const settings = { LOGGED_IN_KEY: 'lk', LOGGED_IN_SALT: 'ls', NONCE_KEY: 'nk', NONCE_SALT: 'ns' }
    expect(await wpSalt('logged_in', settings, noOptions)).toBe('lkls')
    expect(await wpSalt('nonce', settings, noOptions)).toBe('nkns')
  })

  it('skips the placeholder phrase, empty and "0" values, and falls back to the stored option', async () => {
    const read = options({ logged_in_key: 'stored-key', logged_in_salt: 'stored-salt' })
    for (const bad of ['put your unique phrase here', '', '0']) {
      expect(await wpSalt('logged_in', { LOGGED_IN_KEY: bad, LOGGED_IN_SALT: 'ls' }, read)).toBe('stored-keyls')
    }
    expect(await wpSalt('logged_in', {}, read)).toBe('stored-keystored-salt')
  })

  it('refuses a value two of the ten constants share, in both places', async () => {
    const settings: SaltSettings = { LOGGED_IN_KEY: 'same', AUTH_SALT: 'same', LOGGED_IN_SALT: 'ls' }
    const read = options({ logged_in_key: 'stored-key' })
    expect(await wpSalt('logged_in', settings, read)).toBe('stored-keyls')
    expect(await wpSalt('auth', { ...settings, AUTH_KEY: 'ak' }, options({ auth_salt: 'stored-salt' }))).toBe('akstored-salt')
  })

  it('counts SECRET_KEY and SECRET_SALT among the duplicates', async () => {
    const settings: SaltSettings = { NONCE_KEY: 'nk', NONCE_SALT: 'dup', SECRET_SALT: 'dup' }
    expect(await wpSalt('nonce', settings, options({ nonce_salt: 'stored' }))).toBe('nkstored')
  })

  it('uses SECRET_KEY for a missing key, but never for a salt', async () => {
    const settings: SaltSettings = { SECRET_KEY: 'secret', LOGGED_IN_SALT: 'ls' }
    expect(await wpSalt('logged_in', settings, noOptions)).toBe('secretls')
    expect(await wpSalt('logged_in', { SECRET_KEY: 'secret' }, options({ logged_in_salt: 'stored-salt' }))).toBe('secretstored-salt')
    // The scheme's own valid constant wins over SECRET_KEY.
    expect(await wpSalt('logged_in', { ...settings, LOGGED_IN_KEY: 'lk' }, noOptions)).toBe('lkls')
  })

  it('uses SECRET_SALT for the auth scheme only', async () => {
    const settings: SaltSettings = { AUTH_KEY: 'ak', SECRET_SALT: 'ssalt', NONCE_KEY: 'nk' }
    expect(await wpSalt('auth', settings, noOptions)).toBe('akssalt')
    expect(await wpSalt('nonce', settings, noOptions)).toBeNull()
  })

  it('answers null when WordPress would have to generate the salt', async () => {
    expect(await wpSalt('nonce', { NONCE_KEY: 'nk' }, noOptions)).toBeNull()
    expect(await wpSalt('nonce', { NONCE_KEY: 'nk' }, options({ nonce_salt: '' }))).toBeNull()
  })
})
