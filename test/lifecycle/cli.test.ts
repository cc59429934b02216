/**
 * `npm run archive` and `npm run privacy` as real processes: they open the database from the
 * configuration, print progress, exit 0 when done and 1, with a reason, on bad arguments.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, statSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { runMigrations } from '../../src/db/migrate.js'
import { parseKeyring } from '../../src/jobs/request-crypto.js'
import { DIALECTS, freshDatabase } from '../helpers.js'
import { archiveLines, seedJobs, type Seeded } from '../support/lifecycle-seed.js'
import { RUN } from '../support/run-tag.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const KEY = randomBytes(32).toString('base64')

function cli(script: string, env: Record<string, string>, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', LOG_LEVEL: 'silent', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString('utf8') })
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString('utf8') })
    child.on('error', reject)
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

describe.each(DIALECTS)('npm run archive / privacy (%s)', (dialect) => {
  const name = `gw_archive_l${dialect[0]}_${RUN}`
  let db: { url: string; cleanup: () => Promise<void> }
  let dir: string
  let handle: DatabaseHandle
  let seeded: Seeded
  let env: Record<string, string>

  beforeAll(async () => {
    db = await freshDatabase(dialect, name)
    dir = mkdtempSync(join(tmpdir(), `${name}-files-`))
    handle = await openDatabase({ url: db.url, prefix: 'wp_' })
    await runMigrations(handle)
    seeded = await seedJobs(handle, parseKeyring(KEY), Date.now())
    env = { DATABASE_URL: db.url, AI_ENCRYPTION_KEY: KEY }
  }, 60_000)
  afterAll(async () => {
    await handle?.close()
    await db?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  it('refuses bad arguments with a reason and exit 1', async () => {
    const missing = await cli('src/lifecycle/archive-cli.ts', env, [])
    expect([missing.code, missing.stderr]).toEqual([1, expect.stringContaining('--older-than is required')])
    const bad = await cli('src/lifecycle/archive-cli.ts', env, ['--older-than', 'a month'])
    expect([bad.code, bad.stderr]).toEqual([1, expect.stringContaining('--older-than must be a whole number and a unit')])
    const user = await cli('src/lifecycle/privacy-cli.ts', env, ['erase', '--user', '0'])
    expect([user.code, user.stderr]).toEqual([1, expect.stringContaining('--user must be a WordPress user id')])
  }, 60_000)

  it('archives into --dir, then exports and erases one user', async () => {
    const archived = await cli('src/lifecycle/archive-cli.ts', env, ['--older-than', '30d', '--dir', dir, '--batch-size', '6'])
    expect(archived.code, archived.stderr).toBe(0)
    expect(archived.stdout).toContain(`archive: done: ${seeded.old.size} rows archived in 4 files`)
    const { lines } = await archiveLines(dir)
    expect(new Set(lines.map((l) => Number(l.id)))).toEqual(seeded.old)
    for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600)

    const exported = await cli('src/lifecycle/privacy-cli.ts', env, ['export', '--user', '3'])
    expect(exported.code, exported.stderr).toBe(0)
    const doc = JSON.parse(exported.stdout) as { user_id: number; jobs: Array<{ user_id: number; request: { input: string } }> }
    const rows3 = await handle.db.selectFrom('ai_jobs').select('id').where('user_id', '=', 3).execute()
    expect(doc.user_id).toBe(3)
    // Those still in the table and those just archived.
    expect(doc.jobs).toHaveLength(rows3.length + lines.filter((l) => l.user_id === 3).length)
    for (const job of doc.jobs) expect(job.request.input).toMatch(/^private words of user 3 /)

    const lines3 = lines.filter((l) => l.user_id === 3).length
    const erased = await cli('src/lifecycle/privacy-cli.ts', env, ['erase', '--user', '3'])
    expect(erased.code, erased.stderr).toBe(0)
    expect(erased.stdout).toContain(`privacy: user 3: ${rows3.length} jobs, 0 stored results and ${lines3} archived jobs erased`)
    expect(await handle.db.selectFrom('ai_jobs').select('id').where('user_id', '=', 3).execute()).toEqual([])
    expect((await archiveLines(dir)).lines.filter((l) => l.user_id === 3)).toEqual([])
    expect((await archiveLines(dir)).lines.filter((l) => l.user_id === 1).length).toBe(lines.filter((l) => l.user_id === 1).length)
  }, 120_000)
})
