import { parseArgs } from 'node:util'
import { loadConfig } from '../config.js'
import { openDatabase } from '../db/database.js'
import { runMigrations } from '../db/migrate.js'
import { lifecycleHooks } from './hooks.js'
import { eraseUser, EXPORT_MAX_PER_PAGE, exportUserPage, type ExportedJob } from './privacy.js'

const ERASE_MAX_ROUNDS = 10_000

/**
 * `npm run privacy -- export --user ID`: prints `{ user_id, jobs }` (every job of the user, with
 * its request opened) as JSON on stdout.
 * `npm run privacy -- erase --user ID`: deletes the user's jobs, their stored results and their
 * lines in archive files; prints the counts. Exits 1 on a bad argument or an error.
 */
async function main(): Promise<number> {
  const { values, positionals } = parseArgs({ options: { user: { type: 'string' } }, allowPositionals: true, strict: true })
  const command = positionals[0]
  if (positionals.length !== 1 || (command !== 'export' && command !== 'erase')) throw new Error('usage: npm run privacy -- export|erase --user ID')
  const raw = values.user ?? ''
  if (!/^[1-9][0-9]{0,15}$/.test(raw)) throw new Error('--user must be a WordPress user id (a whole number from 1)')
  const userId = Number(raw)

  const config = loadConfig()
  const hooks = lifecycleHooks(config)
  const handle = await openDatabase({ url: config.databaseUrl, prefix: config.tablePrefix, poolSize: 2 })
  try {
    await runMigrations(handle)
    if (command === 'export') {
      const jobs: ExportedJob[] = []
      for (let page = 1; ; page++) {
        const answer = await exportUserPage(handle, config.encryptionKeys, userId, page, EXPORT_MAX_PER_PAGE, hooks)
        jobs.push(...answer.jobs)
        if (answer.done) break
      }
      process.stdout.write(`${JSON.stringify({ user_id: userId, jobs }, null, 2)}\n`)
      return 0
    }
    const total = { jobs: 0, results: 0, lines: 0, missing: 0 }
    for (let round = 0; round < ERASE_MAX_ROUNDS; round++) {
      const r = await eraseUser(handle, userId, hooks)
      total.jobs += r.jobs_erased
      total.results += r.results_erased
      total.lines += r.archive_lines_erased
      total.missing = r.archive_files_missing
      if (r.jobs_erased > 0) console.error(`privacy: user ${userId}: ${r.jobs_erased} jobs erased`)
      if (r.done) {
        console.log(`privacy: user ${userId}: ${total.jobs} jobs, ${total.results} stored results and ${total.lines} archived jobs erased`)
        if (total.missing > 0) {
          console.error(`privacy: ${total.missing} archive files listed in the database are not on this host; run the erase where they are`)
          return 1
        }
        return 0
      }
    }
    console.error(`privacy: user ${userId}: erasure not finished after ${ERASE_MAX_ROUNDS} rounds (archive files busy?); run it again`)
    return 1
  } finally {
    await handle.close()
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  console.error(`privacy: ${(err as Error).message}`)
  process.exit(1)
})
