import type { Config } from '../config.js'
import type { LifecycleHooks } from './archive.js'

/**
 * The one place the data lifecycle learns about stored results (SPEC §12): the daily archive,
 * `npm run archive`, `npm run privacy` and the privacy routes all take their hooks from here.
 * Without a result store outside the table there is nothing to delete or inline.
 */
export function lifecycleHooks(_config: Readonly<Config>): LifecycleHooks {
  return {}
}
