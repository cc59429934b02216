import { parseArgs } from 'node:util'
import { loadConfig } from '../config.js'
import { openDatabase } from '../db/database.js'
import { runMigrations } from '../db/migrate.js'
import { rowCount } from '../jobs/rotate-key.js'
import { lifecycleHooks } from './hooks.js'
import { ArchiveBusy, DEFAULT_ARCHIVE_BATCH, parseDuration, runArchive } from './archive.js'

/**
 * `npm run archive -- --older-than 30d [--dir PATH] [--batch-size N]`: moves terminal jobs last
 * changed before the cut-off to gzip JSON Lines files in PATH (default ARCHIVE_DIR, itself
 * `./data/archive` by default), then deletes them. Killed and run again, it finishes what the
 * killed run started. Exits 1 on a bad argument, or when another run holds the lock.
 */
async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { 'older-than': { type: 'string' }, dir: { type: 'string' }, 'batch-size': { type: 'string' } },
    strict: true,
  })
  const olderThan = values['older-than']
  if (olderThan === undefined) throw new Error('--older-than is required, e.g. --older-than 30d (d, h, m or s)')
  const ageMs = parseDuration(olderThan)
  if (ageMs === undefined) throw new Error(`--older-than must be a whole number and a unit (d, h, m or s), e.g. 30d or 12h; got "${olderThan}"`)
  const batchSize = values['batch-size'] === undefined ? DEFAULT_ARCHIVE_BATCH : Number(values['batch-size'])
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new Error('--batch-size must be a whole number from 1 to 10000')

  const config = loadConfig()
  const dir = values.dir ?? config.archiveDir
  const cutoffMs = Date.now() - ageMs
  const handle = await openDatabase({ url: config.databaseUrl, prefix: config.tablePrefix, poolSize: 3 })
  try {
    // The progress table may be newer than the running service: bring the schema up to date first.
    await runMigrations(handle)
    console.log(`archive: terminal jobs last changed before ${new Date(cutoffMs).toISOString()} → ${dir}`)
    const report = await runArchive(handle, {
      ...lifecycleHooks(config),
      cutoffMs,
      dir,
      batchSize,
      onProgress: (event) => {
        if (event.kind === 'resumed') console.log(`archive: finishing a batch an earlier run left ${event.state}: ${event.file}`)
        else console.log(`archive: ids ${event.fromId}-${event.toId}: ${rowCount(event.archived)} archived to ${event.file}${event.changedMeanwhile > 0 ? `, ${event.changedMeanwhile} changed meanwhile (left in the table)` : ''}`)
      },
    })
    console.log(`archive: done: ${rowCount(report.archived)} archived in ${report.files.length} ${report.files.length === 1 ? 'file' : 'files'}${report.resumed > 0 ? `, ${report.resumed} interrupted batches finished` : ''}`)
    return 0
  } finally {
    await handle.close()
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  const message = err instanceof ArchiveBusy ? `refusing to start: ${err.message}` : (err as Error).message
  console.error(`archive: ${message}`)
  process.exit(1)
})
