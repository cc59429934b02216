/**
 * The whole gateway over WordPress's tables, for HTTP tests of authentication: the fixture rows
 * (test/fixtures/wordpress) loaded into MariaDB or into a SQLite file, the fixture salts passed as
 * WP_* variables, and the injected clock. `reset()` reloads the fixture rows, so a test that
 * changes sessions or roles leaves nothing behind, and builds a new app (fresh caches and
 * throttle counters) on them.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import {
  TableNode, type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryResult, type RootOperationNode, type UnknownRow,
} from 'kysely'
import { buildApp } from '../../src/app.js'
import type { Clock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { testConfig, type Dialect } from '../helpers.js'
import { RUN } from './run-tag.js'
import {
  authVectors as v, dropWordPressFixturesMysql, loadWordPressFixturesMysql, loadWordPressFixturesSqlite,
} from './wordpress-fixtures.js'

/** The fixture salts, as a site configured only by environment passes them (config.ts: WP_<NAME>). */
export const SALT_ENV = Object.fromEntries(Object.entries(v.salts).map(([name, value]) => [`WP_${name}`, value]))

export interface WordPressApps {
  /** Reloads the fixture rows and builds a new app on them. */
  reset(env: Record<string, string>, clock: Clock): Promise<FastifyInstance>
  /** SELECTs of WordPress's tables (users, usermeta, options, sitemeta) made since the last reset. */
  wordpressReads(): number
  /** The database the apps share (after the first reset). */
  handle(): DatabaseHandle
  cleanup(): Promise<void>
}

const WORDPRESS_TABLES = new Set(['users', 'usermeta', 'options', 'sitemeta'].map((t) => v.table_prefix + t))

/** Counts the SELECTs that read WordPress's tables, whatever code makes them. */
class WordPressReadCounter implements KyselyPlugin {
  count = 0
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    const node = args.node
    if (node.kind === 'SelectQueryNode' && (node.from?.froms ?? []).some((f) => TableNode.is(f) && WORDPRESS_TABLES.has(f.table.identifier.name))) this.count++
    return node
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

async function dropWordPressTablesSqlite(handle: DatabaseHandle): Promise<void> {
  for (const table of ['usermeta', 'users', 'options', 'sitemeta'] as const) await handle.db.schema.dropTable(table).ifExists().execute()
}

/** `name` distinguishes the test file's database: `gw_test_auth_<name>_<run>`. */
export function wordpressApps(dialect: Dialect, name: string): WordPressApps {
  const apps: FastifyInstance[] = []
  let handle: DatabaseHandle | undefined
  let counter = new WordPressReadCounter()
  const closeApps = async () => {
    for (const app of apps.splice(0)) await app.close()
  }
  const dir = dialect === 'sqlite' ? mkdtempSync(join(tmpdir(), `gw_test_auth_${name}-`)) : undefined
  const database = `gw_test_auth_${name}_${RUN}`

  async function loadFixtures(): Promise<string> {
    if (dir) {
      const url = `sqlite:${join(dir, 'gateway.sqlite')}`
      handle ??= await openDatabase({ url, prefix: v.table_prefix })
      await dropWordPressTablesSqlite(handle)
      await loadWordPressFixturesSqlite(handle)
      return url
    }
    // No ai_jobs rows from an earlier run: the database is made anew once per file.
    if (!handle) await dropWordPressFixturesMysql(database)
    const url = await loadWordPressFixturesMysql(database)
    handle ??= await openDatabase({ url, prefix: v.table_prefix })
    return url
  }

  return {
    async reset(env, clock) {
      await closeApps()
      const url = await loadFixtures()
      counter = new WordPressReadCounter()
      const counted: DatabaseHandle = { ...handle!, db: handle!.db.withPlugin(counter) }
      const app = await buildApp(testConfig({ DATABASE_URL: url, ...SALT_ENV, ...env }), { logger: false, startWorkers: false, clock, handle: counted })
      apps.push(app)
      return app
    },
    wordpressReads: () => counter.count,
    handle: () => {
      if (!handle) throw new Error('reset() first')
      return handle
    },
    async cleanup() {
      await closeApps()
      await handle?.close()
      if (dir) rmSync(dir, { recursive: true, force: true })
      else await dropWordPressFixturesMysql(database)
    },
  }
}
