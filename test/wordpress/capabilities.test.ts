import { describe, expect, it } from 'vitest'
import { resolveCapabilities } from '../../src/wordpress/capabilities.js'
import { maybeUnserialize } from '../../src/wordpress/php-unserialize.js'

const roles = maybeUnserialize(
  'a:2:{s:6:"author";a:2:{s:4:"name";s:6:"Author";s:12:"capabilities";a:3:{s:10:"edit_posts";b:1;s:4:"read";b:1;s:12:"upload_files";b:1;}}'
  + 's:10:"subscriber";a:2:{s:4:"name";s:10:"Subscriber";s:12:"capabilities";a:2:{s:4:"read";b:1;s:7:"level_0";b:1;}}}',
)
const caps = (serialized: string) => maybeUnserialize(serialized)

describe('WP_User capabilities', () => {
  it('merges role capabilities and lists the role name as a capability', () => {
    const user = resolveCapabilities({ userCaps: caps('a:1:{s:6:"author";b:1;}'), roleDefinitions: roles })
    expect(user.roles).toEqual(['author'])
    expect(user.can('edit_posts')).toBe(true)
    expect(user.can('author')).toBe(true)
    expect(user.can('manage_options')).toBe(false)
  })

  it('lets the user\'s own entries grant and deny (false denies a role\'s capability)', () => {
    const user = resolveCapabilities({
      userCaps: caps('a:3:{s:6:"author";b:1;s:10:"edit_posts";b:0;s:14:"manage_options";b:1;}'),
      roleDefinitions: roles,
    })
    expect(user.can('edit_posts')).toBe(false)
    expect(user.can('manage_options')).toBe(true)
    expect(user.can('read')).toBe(true)
  })

  it('merges several roles and ignores unknown ones', () => {
    const user = resolveCapabilities({ userCaps: caps('a:3:{s:10:"subscriber";b:1;s:6:"author";b:1;s:5:"ghost";b:1;}'), roleDefinitions: roles })
    expect(user.roles).toEqual(['subscriber', 'author'])
    expect(user.can('level_0')).toBe(true)
    expect(user.can('upload_files')).toBe(true)
    // "ghost" is no role, but as the user's own entry it is still a granted capability.
    expect(user.can('ghost')).toBe(true)
  })

  it('keeps a role listed as false, as get_role_caps() does, but not its name', () => {
    const user = resolveCapabilities({ userCaps: caps('a:1:{s:6:"author";b:0;}'), roleDefinitions: roles })
    expect(user.roles).toEqual(['author'])
    expect(user.can('edit_posts')).toBe(true)
    expect(user.can('author')).toBe(false)
  })

  it('gives everyone "exist" and nobody "do_not_allow"', () => {
    const nobody = resolveCapabilities({ userCaps: undefined, roleDefinitions: roles })
    expect(nobody.can('exist')).toBe(true)
    expect(nobody.can('read')).toBe(false)
    const odd = resolveCapabilities({ userCaps: caps('a:1:{s:12:"do_not_allow";b:1;}'), roleDefinitions: roles })
    expect(odd.can('do_not_allow')).toBe(false)
  })

  it('makes multisite super admins all-powerful except do_not_allow', () => {
    const siteAdmins = maybeUnserialize('a:1:{i:0;s:5:"alice";}')
    const alice = resolveCapabilities({ userCaps: caps('a:1:{s:10:"subscriber";b:1;}'), roleDefinitions: roles, superAdmin: { login: 'alice', siteAdmins } })
    expect(alice.isSuperAdmin).toBe(true)
    expect(alice.can('manage_network_options')).toBe(true)
    expect(alice.can('do_not_allow')).toBe(false)
    const bob = resolveCapabilities({ userCaps: caps('a:1:{s:10:"subscriber";b:1;}'), roleDefinitions: roles, superAdmin: { login: 'bob', siteAdmins } })
    expect(bob.isSuperAdmin).toBe(false)
    expect(bob.can('manage_options')).toBe(false)
  })

  it('defaults site_admins to array( "admin" ) when the network option is missing', () => {
    const admin = resolveCapabilities({ userCaps: undefined, roleDefinitions: roles, superAdmin: { login: 'admin', siteAdmins: undefined } })
    expect(admin.isSuperAdmin).toBe(true)
  })
})
