/**
 * wp_salt() as WordPress computes it (wp-includes/pluggable.php), for the schemes the gateway
 * needs: `logged_in` (cookies) and `nonce` (REST nonces).
 */

export type SaltScheme = 'auth' | 'secure_auth' | 'logged_in' | 'nonce'

/** The wp-config constants wp_salt() reads. An absent property is an undefined constant. */
export interface SaltSettings {
  AUTH_KEY?: string | undefined
  AUTH_SALT?: string | undefined
  SECURE_AUTH_KEY?: string | undefined
  SECURE_AUTH_SALT?: string | undefined
  LOGGED_IN_KEY?: string | undefined
  LOGGED_IN_SALT?: string | undefined
  NONCE_KEY?: string | undefined
  NONCE_SALT?: string | undefined
  SECRET_KEY?: string | undefined
  SECRET_SALT?: string | undefined
}

/** Reads a site option (`get_site_option`), already unserialized; undefined when absent. */
export type SiteOptionReader = (name: string) => Promise<unknown>

// wp_salt() walks exactly these ten constants when it looks for duplicates.
const DUPLICATE_CHECKED = ['AUTH', 'SECURE_AUTH', 'LOGGED_IN', 'NONCE', 'SECRET'].flatMap((first) =>
  ['KEY', 'SALT'].map((second) => `${first}_${second}` as keyof SaltSettings),
)
// wp-config-sample.php's placeholder. A localized sample's translated phrase is excluded by
// WordPress as well; we cannot know it, so such a site must replace its placeholders (it should).
const DEFAULT_PHRASE = 'put your unique phrase here'

/** PHP truthiness of a constant's string value: "" and "0" are false. */
function truthy(value: string | undefined): value is string {
  return value !== undefined && value !== '' && value !== '0'
}

/** Values that WordPress refuses to use: the placeholder, and any value two constants share. */
function duplicatedValues(settings: SaltSettings): Set<string> {
  const seen = new Set<string>()
  const duplicated = new Set<string>([DEFAULT_PHRASE])
  for (const name of DUPLICATE_CHECKED) {
    const value = settings[name]
    if (value === undefined) continue
    if (seen.has(value)) duplicated.add(value)
    seen.add(value)
  }
  return duplicated
}

function usable(value: string | undefined, duplicated: Set<string>): value is string {
  return truthy(value) && !duplicated.has(value)
}

async function fromOption(readOption: SiteOptionReader, name: string): Promise<string | null> {
  const value = await readOption(name)
  // get_site_option() returns whatever is stored; wp_salt() only tests it for truthiness and
  // concatenates it. A salt WordPress generated is always a 64-character string.
  if (typeof value === 'string' && truthy(value)) return value
  if (typeof value === 'number' && value !== 0) return String(value)
  return null
}

/**
 * The salt WordPress's wp_salt($scheme) returns, or `null` when it would have to generate one.
 *
 * Precedence, per part (key, salt):
 * 1. the `{SCHEME}_{KEY|SALT}` constant, if set, truthy and not duplicated;
 * 2. for the key only, `SECRET_KEY` under the same test (and `SECRET_SALT` for the salt of the
 *    `auth` scheme only);
 * 3. the site option `{scheme}_{key|salt}` that WordPress generated and stored earlier.
 *
 * When step 3 finds nothing, WordPress generates and stores a random value on first use. The
 * gateway never writes WordPress's tables, so it answers `null`: no cookie or nonce can have been
 * issued with a salt that does not exist yet, and callers refuse them all.
 */
export async function wpSalt(scheme: SaltScheme, settings: SaltSettings, readOption: SiteOptionReader): Promise<string | null> {
  const duplicated = duplicatedValues(settings)
  const fallback: Record<'key' | 'salt', string> = { key: '', salt: '' }
  if (usable(settings.SECRET_KEY, duplicated)) fallback.key = settings.SECRET_KEY
  if (scheme === 'auth' && usable(settings.SECRET_SALT, duplicated)) fallback.salt = settings.SECRET_SALT

  const parts: string[] = []
  for (const type of ['key', 'salt'] as const) {
    const constant = settings[`${scheme.toUpperCase()}_${type.toUpperCase()}` as keyof SaltSettings]
    if (usable(constant, duplicated)) {
      parts.push(constant)
    } else if (fallback[type]) {
      parts.push(fallback[type])
    } else {
      const stored = await fromOption(readOption, `${scheme}_${type}`)
      if (stored === null) return null
      parts.push(stored)
    }
  }
  return parts.join('')
}
