/**
 * `npm run rotate-key` as a real process: killed with SIGKILL between batches and started again it
 * completes; it prints its counts, exits 0 when every row is on the first key, and exits 1,
 * naming the key ids, when rows name a key AI_ENCRYPTION_KEY lacks.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { insertJobs, type NewJobRow } from '../../src/db/jobs-repository.js'
import { runMigrations } from '../../src/db/migrate.js'
import { toDbTime } from '../../src/db/time.js'
import { openRequest, parseKeyring, sealRequest, type Keyring } from '../../src/jobs/request-crypto.js'
import { keyCensus } from '../../src/jobs/rotate-key.js'
import { DIALECTS, freshDatabase } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const K1 = randomBytes(32).toString('base64')
const K2 = randomBytes(32).toString('base64')
const RING = `k2:${K2},k1:${K1}`
const ROWS = 300

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs the CLI; `killOn` SIGKILLs it as soon as a line of its output matches. */
function rotateKey(env: Record<string, string>, args: string[], killOn?: RegExp): Promise<Run> {
  return new Promise((resolve, reject) => {
    // One process (`node --import tsx`), not the tsx CLI, which runs the script in a child that a SIGKILL would orphan.
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/jobs/rotate-key-cli.ts', ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', LOG_LEVEL: 'silent', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8')
      if (killOn?.test(stdout)) child.kill('SIGKILL')
    })
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8')
    })
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

describe.each(DIALECTS)('npm run rotate-key (%s)', (dialect) => {
  let db: { url: string; cleanup: () => Promise<void> }
  let handle: DatabaseHandle
  const plaintext = new Map<string, string>()

  const seed = async (keyring: Keyring | undefined, n: number, label: string) => {
    const at = toDbTime(Date.now())
    const jobs: NewJobRow[] = []
    for (let i = 0; i < n; i++) {
      const key = randomBytes(32).toString('hex')
      const json = JSON.stringify({ model: 'echo', input: `${label} ${i}`, params: {} })
      plaintext.set(key, json)
      jobs.push({
        user_id: 1, owner_key: 'u:1', status: i % 3 === 0 ? 'succeeded' : 'pending', input_hash: randomBytes(32).toString('hex'),
        request_json: sealRequest(json, keyring, key), idempotency_key: key, model: 'echo', request_id: `seed-${i}`,
        created_at: at, updated_at: at, run_after: at,
      })
    }
    for (let i = 0; i < jobs.length; i += 100) await insertJobs(handle, jobs.slice(i, i + 100))
  }

  beforeAll(async () => {
    db = await freshDatabase(dialect, `gw_rotate_cli_${dialect}_${RUN}`)
    handle = await openDatabase({ url: db.url, prefix: 'wp_' })
    await runMigrations(handle)
    await seed(parseKeyring(`k1:${K1}`), ROWS, 'under k1')
    await seed(undefined, 5, 'plain')
  })
  afterAll(async () => {
    await handle?.close()
    await db?.cleanup()
  })

  it('killed mid-way and run again, it completes with every row readable and on the first key', async () => {
    const env = { DATABASE_URL: db.url, AI_ENCRYPTION_KEY: RING }
    const killed = await rotateKey(env, ['--batch-size', '1'], /ids \d+-\d+: 1 re-encrypted/)
    expect(killed.signal).toBe('SIGKILL')
    expect(killed.stdout).toContain(`found ${ROWS + 5} rows: 5 plain, ${ROWS} under "k1"`)
    const halfway = await keyCensus(handle)
    expect(halfway.byKeyId.get('k2')).toBeGreaterThan(0)
    expect(halfway.byKeyId.get('k1')).toBeGreaterThan(0)

    const finished = await rotateKey(env, ['--batch-size', '50'])
    expect(finished.stderr).toBe('')
    expect(finished.code).toBe(0)
    expect(finished.stdout).toContain(`${halfway.byKeyId.get('k1')} rows re-encrypted with key "k2", 0 changed meanwhile (left alone), 0 unreadable`)
    expect(finished.stdout).toContain(`now ${ROWS + 5} rows: 5 plain, ${ROWS} under "k2"`)
    expect(finished.stdout).toContain('5 rows stored plain left plain (--include-plain seals them too)')
    expect(finished.stdout).toMatch(/done: every encrypted row is under key "k2"/)

    const rows = await handle.db.selectFrom('ai_jobs').select(['request_json', 'idempotency_key']).execute()
    const k2Only = parseKeyring(`k2:${K2}`)
    for (const r of rows) {
      if (!r.request_json.startsWith('{')) expect(r.request_json.startsWith('aes256gcm:k2:')).toBe(true)
      expect(openRequest(r.request_json, k2Only, r.idempotency_key)).toBe(plaintext.get(r.idempotency_key))
    }

    const again = await rotateKey(env, [])
    expect(again.code).toBe(0)
    expect(again.stdout).toContain('0 rows re-encrypted')
  }, 120_000)

  it('refuses to start, naming the missing key ids, and touches nothing; without a key it says so in one line', async () => {
    await seed(parseKeyring(`lost:${randomBytes(32).toString('base64')}`), 2, 'under a lost key')
    const before = await handle.db.selectFrom('ai_jobs').select(['id', 'request_json']).orderBy('id').execute()
    const refused = await rotateKey({ DATABASE_URL: db.url, AI_ENCRYPTION_KEY: `k3:${randomBytes(32).toString('base64')},${RING}` }, [])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/^rotate-key: refusing to start: rows name encryption keys that are not in AI_ENCRYPTION_KEY: "lost" \(2 rows\); add them/)
    expect(await handle.db.selectFrom('ai_jobs').select(['id', 'request_json']).orderBy('id').execute()).toEqual(before)

    const unset = await rotateKey({ DATABASE_URL: db.url }, [])
    expect(unset.code).toBe(1)
    expect(unset.stderr).toBe('rotate-key: AI_ENCRYPTION_KEY: is not set: there is no key to seal rows with\n')
  }, 120_000)
})
