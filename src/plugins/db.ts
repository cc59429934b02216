import fp from 'fastify-plugin'
import { openDatabase, type DatabaseHandle, type ServerVariablesReader } from '../db/database.js'
import { runMigrations } from '../db/migrate.js'
import { createBatcherFor, type CreateBatcher } from '../jobs/create-batcher.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The job database: Kysely over MySQL/MariaDB or SQLite, with the WordPress table prefix. */
    db: DatabaseHandle
    /** Creates arriving together become one multi-row INSERT. */
    createBatcher: CreateBatcher
  }
}

export interface DbPluginOptions {
  /** An open database; otherwise one is opened from DATABASE_URL and closed with the app. */
  handle?: DatabaseHandle | undefined
  /** Run migrations at start (default true). */
  migrate?: boolean | undefined
  /** MySQL: where the binary-log check reads the server's settings (tests hand in their own). */
  serverVariables?: ServerVariablesReader | undefined
}

/** Opens the database (unless one is handed in), runs the migrations, and closes what it opened. */
export const dbPlugin = fp<DbPluginOptions>(async (app, options) => {
  const handle = options.handle ?? await openDatabase({ url: app.config.databaseUrl, prefix: app.config.tablePrefix, serverVariables: options.serverVariables })
  if (!options.handle) app.addHook('onClose', () => handle.close())
  app.decorate('db', handle)
  app.decorate('createBatcher', createBatcherFor(handle))
  if (options.migrate !== false) await runMigrations(handle, () => app.clock.now())
}, { name: 'db', dependencies: ['config'] })
