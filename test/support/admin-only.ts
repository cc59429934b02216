import type { WordPressAuthenticator } from '../../src/auth/authenticate.js'

/**
 * WordPress logins for tests of admin routes without WordPress tables: `Authorization: Basic admin`
 * is user 1 with the admin capability, any other Basic value is refused, and signed tokens pass
 * as signed.
 */
export const adminOnly: WordPressAuthenticator = {
  cookie: async () => ({ kind: 'none' }),
  pageCookie: async () => ({ kind: 'none' }),
  token: async (principal) => principal,
  basic: async ({ authorization }) => (authorization === 'Basic admin'
    ? { kind: 'user', principal: { method: 'application_password', userId: 1, ownerKey: 'u:1', canCreate: true, isAdmin: true } }
    : { kind: 'invalid' }),
}

export const ADMIN = { authorization: 'Basic admin' }
