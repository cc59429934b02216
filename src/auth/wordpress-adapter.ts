import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import type { DatabaseHandle } from '../db/database.js'
import type { Store } from '../store/types.js'
import type { WordPressAuthenticator } from './authenticate.js'
import type { Principal } from './principal.js'
import { userOwnerKey } from './principal.js'
import { createWordPressAuth, type AuthenticatedUser, type TokenUser, type WordPressAuth, type WordPressAuthSettings } from './wordpress-auth.js'

function toPrincipal(user: AuthenticatedUser): Principal {
  return {
    method: user.method,
    userId: user.userId,
    ownerKey: userOwnerKey(user.userId),
    canCreate: user.canCreate,
    isAdmin: user.isAdmin,
    roles: user.roles,
    recheck: async () => toPrincipal(await user.recheck()),
  }
}

/** A token never satisfies AI_ADMIN_CAPABILITY; only its right to create follows the user's roles. */
function toTokenPrincipal(token: Principal, user: TokenUser): Principal {
  return { ...token, canCreate: user.canCreate, isAdmin: false, roles: user.roles, recheck: async () => toTokenPrincipal(token, await user.recheck()) }
}

export function wordPressSettings(config: Readonly<Config>): WordPressAuthSettings {
  return { ...config.wordpress }
}

/** WordPress's cookie and application-password checks, in the shape the auth chain takes. */
export function wordPressAuthenticator(auth: WordPressAuth): WordPressAuthenticator {
  return {
    async cookie({ method, cookieHeader, nonce }) {
      const r = await auth.authenticateCookie({ method, cookieHeader, nonce })
      if (r.kind === 'user') return { kind: 'user', principal: toPrincipal(r) }
      if (r.kind === 'none') return { kind: 'none' }
      return r
    },
    async pageCookie({ method, cookieHeader }) {
      const r = await auth.authenticatePageCookie({ method, cookieHeader })
      if (r.kind === 'none') return { kind: 'none' }
      return { kind: 'user', principal: toPrincipal(r.user), login: r.user.login, nonce: r.nonce }
    },
    async basic({ authorization, clientIp }) {
      const r = await auth.authenticateBasic({ authorizationHeader: authorization, clientIp })
      if (r.kind === 'user') return { kind: 'user', principal: toPrincipal(r) }
      if (r.kind === 'throttled') return r
      return { kind: 'invalid' }
    },
    async token(principal) {
      return toTokenPrincipal(principal, await auth.tokenUser(principal.userId))
    },
  }
}

export function createWordPressAuthFor(
  config: Readonly<Config>, handle: DatabaseHandle, store: Store, clock: Clock, settings: WordPressAuthSettings = wordPressSettings(config),
): WordPressAuth {
  return createWordPressAuth({
    db: handle,
    settings,
    store,
    clock,
    createCapability: config.createCapability,
    adminCapability: config.adminCapability,
  })
}
