import mysql from 'mysql2/promise'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { dropMysqlDatabase, freshMysqlDatabase, MYSQL_BASE, testConfig, waitFor } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const NAME = `gw_t2_failed_start_${RUN}`

async function connectionsTo(database: string): Promise<number> {
  const conn = await mysql.createConnection(`${MYSQL_BASE}/`)
  try {
    const [rows] = await conn.query('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ?', [database])
    return Number((rows as { n: number }[])[0]!.n)
  } finally {
    await conn.end()
  }
}

describe('a start that fails half-way', () => {
  let url: string
  beforeAll(async () => {
    url = await freshMysqlDatabase(NAME)
  })
  afterAll(async () => {
    await dropMysqlDatabase(NAME)
  })

  it('rejects with the reason and leaves no database connection open', async () => {
    // The database opens and migrates; then the dispatch key is unusable.
    const config = testConfig({
      DATABASE_URL: url, AI_WORKER_URL: 'http://127.0.0.1:9/dispatch', PUBLIC_URL: 'http://127.0.0.1:3000',
      AI_WEBHOOK_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', AI_JWT_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----',
    })
    await expect(buildApp(config, { logger: false })).rejects.toThrow(/AI_JWT_PRIVATE_KEY/)
    // The migration ran (so a connection was open) and every connection is gone again.
    const conn = await mysql.createConnection(url)
    const [tables] = await conn.query("SHOW TABLES LIKE 'wp_ai_jobs'")
    await conn.end()
    expect((tables as unknown[]).length).toBe(1)
    await waitFor(async () => ((await connectionsTo(NAME)) === 0 ? true : undefined), 5_000, 'the pool to close')
  })
})
