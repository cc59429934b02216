/**
 * A user's capabilities the way WP_User::get_role_caps() and WP_User::has_cap() compute them,
 * minus what only PHP can see: map_meta_cap() (the gateway only asks primitive capabilities
 * such as `read` or `manage_options`, which map to themselves) and `user_has_cap` filters.
 */
import { isPhpArray, phpArrayGet, phpEmpty, type PhpArray, type PhpValue } from './php-unserialize.js'

export interface UserCapabilities {
  /** Role names found in the user's `{prefix}capabilities` meta that exist in `{prefix}user_roles`. */
  readonly roles: readonly string[]
  /** True for a multisite super admin (listed in the `site_admins` network option). */
  readonly isSuperAdmin: boolean
  /** Every capability that is granted (after the user's own denials). */
  readonly granted: ReadonlySet<string>
  /** WP_User::has_cap() for a primitive capability. */
  can(capability: string): boolean
}

export interface CapabilityInputs {
  /** The unserialized `{prefix}capabilities` user meta (e.g. `wp_capabilities`). */
  userCaps: PhpValue | undefined
  /** The unserialized `{prefix}user_roles` option. */
  roleDefinitions: PhpValue | undefined
  /** The user's login and the unserialized `site_admins` network option, on a multisite. */
  superAdmin?: { login: string; siteAdmins: PhpValue | undefined } | undefined
}

function roleCapabilities(roleDefinitions: PhpValue | undefined, role: string): PhpArray | undefined {
  if (!isPhpArray(roleDefinitions)) return undefined
  const definition = phpArrayGet(roleDefinitions, role)
  if (!isPhpArray(definition)) return undefined
  const caps = phpArrayGet(definition, 'capabilities')
  return isPhpArray(caps) ? caps : new Map()
}

/** get_super_admins(): the option's default, when the row is missing, is array( 'admin' ). */
function isSuperAdmin(input: CapabilityInputs['superAdmin']): boolean {
  if (!input) return false
  const admins = input.siteAdmins === undefined || input.siteAdmins === null ? new Map([[0, 'admin']]) : input.siteAdmins
  if (!isPhpArray(admins)) return false
  for (const login of admins.values()) if (login === input.login) return true
  return false
}

// Integer keys cannot name a capability (array_merge() even renumbers them), so only string
// keys take part.
function stringKeys(array: PhpArray): string[] {
  return [...array.keys()].filter((key): key is string => typeof key === 'string')
}

function mergeNamed(into: Map<string, PhpValue>, from: PhpArray): void {
  for (const [key, value] of from) if (typeof key === 'string') into.set(key, value)
}

/** Builds the capability set of one user, as WP_User::get_role_caps() merges it. */
export function resolveCapabilities(input: CapabilityInputs): UserCapabilities {
  const userCaps: PhpArray = isPhpArray(input.userCaps) ? input.userCaps : new Map()
  // WordPress takes every key that names a known role, whatever its value: a role set to false
  // still contributes its capabilities, and the user's own entry then overrides only the role
  // name itself. Odd, but it is what get_role_caps() does.
  const roles = stringKeys(userCaps).filter((key) => roleCapabilities(input.roleDefinitions, key) !== undefined)
  const allcaps = new Map<string, PhpValue>()
  for (const role of roles) mergeNamed(allcaps, roleCapabilities(input.roleDefinitions, role)!)
  // array_merge(): the user's own entries come last, so `'edit_posts' => false` denies.
  mergeNamed(allcaps, userCaps)

  const granted = new Set<string>()
  for (const [cap, value] of allcaps) if (!phpEmpty(value)) granted.add(cap)
  granted.add('exist')
  granted.delete('do_not_allow')

  const superAdmin = isSuperAdmin(input.superAdmin)
  return {
    roles,
    isSuperAdmin: superAdmin,
    granted,
    // has_cap(): super admins have everything but do_not_allow; everyone "exists"; nobody
    // holds do_not_allow.
    can: (capability) => (superAdmin ? capability !== 'do_not_allow' : granted.has(capability)),
  }
}
