import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from '../config.js'
import { openDatabase } from '../db/database.js'
import { DEFAULT_BATCH_SIZE, MissingKeys, rotateKeys, rowCount, type KeyCensus } from './rotate-key.js'

function describe(census: KeyCensus): string {
  const parts = [`${census.plain} plain`]
  if (census.withoutId > 0) parts.push(`${census.withoutId} under a key without an id`)
  for (const [id, rows] of [...census.byKeyId].sort(([a], [b]) => a.localeCompare(b))) parts.push(`${rows} under "${id}"`)
  return `${rowCount(census.rows)}: ${parts.join(', ')}`
}

/**
 * `npm run rotate-key [-- --batch-size N] [--include-plain]`: seals every request stored under an
 * older key with the first key of AI_ENCRYPTION_KEY. Exits 1 if a key is missing, a row cannot be
 * opened, or rows are still left on an older key at the end.
 */
async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { 'batch-size': { type: 'string' }, 'include-plain': { type: 'boolean', default: false } },
    strict: true,
  })
  const batchSize = values['batch-size'] === undefined ? DEFAULT_BATCH_SIZE : Number(values['batch-size'])
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new Error('--batch-size must be a whole number from 1 to 10000')
  const includePlain = values['include-plain'] === true

  const config = loadConfig()
  const keyring = config.encryptionKeys
  if (!keyring) throw new ConfigError('AI_ENCRYPTION_KEY', 'is not set: there is no key to seal rows with')
  const current = keyring.current.id === undefined ? 'the key without an id' : `key "${keyring.current.id}"`
  const handle = await openDatabase({ url: config.databaseUrl, prefix: config.tablePrefix, poolSize: 2 })
  try {
    const report = await rotateKeys(handle, keyring, {
      batchSize,
      includePlain,
      onProgress: (event) => {
        if (event.kind === 'census') console.log(`rotate-key: ${event.phase === 'before' ? 'found' : 'now'} ${describe(event.census)}`)
        else if (event.batch.rotated + event.batch.changedMeanwhile + event.batch.unreadable.length > 0) {
          const { fromId, toId, rotated, changedMeanwhile, unreadable } = event.batch
          console.log(`rotate-key: ids ${fromId}-${toId}: ${rotated} re-encrypted, ${changedMeanwhile} changed meanwhile (left alone), ${unreadable.length} unreadable`)
        }
      },
    })
    console.log(`rotate-key: ${rowCount(report.rotated)} re-encrypted with ${current}, ${report.changedMeanwhile} changed meanwhile (left alone), ${report.unreadable.length} unreadable`)
    for (const u of report.unreadable.slice(0, 20)) console.error(`rotate-key: job ${u.id} cannot be read: ${u.message}`)
    if (report.unreadable.length > 20) console.error(`rotate-key: … and ${report.unreadable.length - 20} more unreadable rows`)
    if (!includePlain && report.after.plain > 0) console.log(`rotate-key: ${rowCount(report.after.plain)} stored plain left plain (--include-plain seals them too)`)
    if (report.remaining > 0) {
      console.error(`rotate-key: ${rowCount(report.remaining)} still not under ${current}; keep the older keys in AI_ENCRYPTION_KEY${report.unreadable.length === 0 ? ' and run again (was a replica still sealing with an older first key?)' : ''}`)
      return 1
    }
    console.log(`rotate-key: done: every encrypted row is under ${current}; the table no longer needs the older keys`)
    return 0
  } finally {
    await handle.close()
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  const message = err instanceof MissingKeys ? `refusing to start: ${err.message}` : (err as Error).message
  console.error(`rotate-key: ${message}`)
  process.exit(1)
})
