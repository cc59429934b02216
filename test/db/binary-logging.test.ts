/**
 * SPEC §12: start-up refuses statement-based binary logging (unsafe with SKIP LOCKED). The server's
 * settings are read through a reader the tests replace, so the shared server is never changed.
 */
import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { checkBinaryLogging, openDatabase, readServerVariables, type ServerVariables } from '../../src/db/database.js'
import { dropMysqlDatabase, freshDatabase, freshMysqlDatabase, MYSQL_BASE, testConfig, waitFor } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const NAME = `gw_binlog_${RUN}`
const REFUSAL = /^binlog_format=STATEMENT with binary logging on \(log_bin=1\) is unsafe with the job queue's FOR UPDATE SKIP LOCKED .*: set binlog_format=ROW or MIXED on the database server$/

async function connectionsTo(database: string): Promise<number> {
  const conn = await mysql.createConnection(`${MYSQL_BASE}/`)
  try {
    const [rows] = await conn.query('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ?', [database])
    return Number((rows as { n: number }[])[0]!.n)
  } finally {
    await conn.end()
  }
}

const reader = (vars: ServerVariables) => async () => vars

describe('checkBinaryLogging', () => {
  it.each([
    [1, 'STATEMENT'], ['1', 'statement'], ['ON', 'STATEMENT'], [1n, 'STATEMENT'],
  ])('refuses log_bin=%s with binlog_format=%s, saying why and what to set', (log_bin, binlog_format) => {
    expect(() => checkBinaryLogging({ log_bin, binlog_format })).toThrow(REFUSAL)
  })

  it.each([
    [1, 'ROW'], [1, 'MIXED'], [0, 'STATEMENT'], ['OFF', 'STATEMENT'], [1, 'row'],
  ])('accepts log_bin=%s with binlog_format=%s', (log_bin, binlog_format) => {
    expect(() => checkBinaryLogging({ log_bin, binlog_format })).not.toThrow()
  })
})

describe('the binary-log check at start-up (MariaDB)', () => {
  let url: string
  beforeAll(async () => {
    url = await freshMysqlDatabase(NAME)
  })
  afterAll(async () => {
    await dropMysqlDatabase(NAME)
  })

  it('reads @@log_bin and @@binlog_format from the server, and opening agrees with what they say', async () => {
    const handle = await openDatabase({ url, prefix: 'wp_', serverVariables: async () => ({ log_bin: 0, binlog_format: 'ROW' }) })
    let vars: ServerVariables
    try {
      vars = await readServerVariables(handle.db)
    } finally {
      await handle.close()
    }
    expect([0, 1]).toContain(Number(vars.log_bin))
    expect(['ROW', 'MIXED', 'STATEMENT']).toContain(String(vars.binlog_format).toUpperCase())
    // The real reader: opening succeeds exactly when these settings pass the check.
    const unsafe = Number(vars.log_bin) === 1 && String(vars.binlog_format).toUpperCase() === 'STATEMENT'
    const opened = openDatabase({ url, prefix: 'wp_' })
    if (unsafe) await expect(opened).rejects.toThrow(REFUSAL)
    else await (await opened).close()
  })

  it('opening refuses statement logging with the message and leaves no connection open', async () => {
    await expect(openDatabase({ url, prefix: 'wp_', serverVariables: reader({ log_bin: 1, binlog_format: 'STATEMENT' }) })).rejects.toThrow(REFUSAL)
    for (const vars of [{ log_bin: 1, binlog_format: 'ROW' }, { log_bin: 1, binlog_format: 'MIXED' }, { log_bin: 0, binlog_format: 'STATEMENT' }]) {
      const handle = await openDatabase({ url, prefix: 'wp_', serverVariables: reader(vars) })
      await handle.close()
    }
    await waitFor(async () => ((await connectionsTo(NAME)) === 0 ? true : undefined), 5_000, 'the pools to close')
  })

  it('buildApp fails with that one line before migrating, and closes its pool', async () => {
    const config = testConfig({ DATABASE_URL: url })
    const start = buildApp(config, { logger: false, startWorkers: false, serverVariables: reader({ log_bin: 1, binlog_format: 'STATEMENT' }) })
    const err = await start.then(() => undefined, (e: unknown) => e as Error)
    expect(err?.message).toMatch(REFUSAL)
    expect(err?.message).not.toContain('\n')
    const conn = await mysql.createConnection(url)
    const [tables] = await conn.query("SHOW TABLES LIKE 'wp_ai_jobs'")
    await conn.end()
    expect((tables as unknown[]).length).toBe(0)
    await waitFor(async () => ((await connectionsTo(NAME)) === 0 ? true : undefined), 5_000, 'the pool to close')

    const app = await buildApp(config, { logger: false, startWorkers: false, serverVariables: reader({ log_bin: 1, binlog_format: 'ROW' }) })
    await app.close()
  })
})

describe('the binary-log check on SQLite', () => {
  it('is skipped: SQLite has no binary log', async () => {
    const db = await freshDatabase('sqlite', `gw-binlog-${RUN}`)
    let asked = false
    try {
      const handle = await openDatabase({ url: db.url, prefix: 'wp_', serverVariables: async () => {
        asked = true
        return { log_bin: 1, binlog_format: 'STATEMENT' }
      } })
      await handle.close()
    } finally {
      await db.cleanup()
    }
    expect(asked).toBe(false)
  })
})
