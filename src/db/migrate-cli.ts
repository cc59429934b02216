import { loadConfig } from '../config.js'
import { openDatabase } from './database.js'
import { runMigrations } from './migrate.js'

/** `npm run migrate`: runs the migrations against the configured database and exits. */
async function main(): Promise<void> {
  const config = loadConfig()
  const handle = await openDatabase({ url: config.databaseUrl, prefix: config.tablePrefix, poolSize: 1 })
  try {
    const report = await runMigrations(handle)
    console.log(`migrations: ${report.applied.length} applied (${report.applied.join(', ') || 'none'}), ${report.alreadyApplied.length} already applied`)
  } finally {
    await handle.close()
  }
}

main().catch((err: unknown) => {
  console.error(`migrate: ${(err as Error).message}`)
  process.exit(1)
})
