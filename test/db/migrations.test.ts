import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import mysql from 'mysql2/promise'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { manualClock } from '../../src/clock.js'
import { openDatabase, type DatabaseHandle } from '../../src/db/database.js'
import { runMigrations } from '../../src/db/migrate.js'
import { migrations } from '../../migrations/index.js'
import { bearer, buildTestApp, dropMysqlDatabase, freshMysqlDatabase, testConfig, waitFor, type TestApp } from '../helpers.js'
import { RUN } from '../support/run-tag.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const TSX = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url))

// MariaDB/MySQL only: SQLite has no seed tables, GET_LOCK or information_schema.
const created: string[] = []
const handles: DatabaseHandle[] = []
const conns: mysql.Connection[] = []

/** A fresh database, its name tagged with this run so parallel runs on one server never collide. */
async function database(name: string): Promise<string> {
  const tagged = name.length + RUN.length + 1 <= 64 ? `${name}_${RUN}` : `${name.slice(0, 64 - RUN.length - 1)}_${RUN}`
  created.push(tagged)
  return freshMysqlDatabase(tagged)
}

async function connect(url: string): Promise<mysql.Connection> {
  const conn = await mysql.createConnection({ uri: url, dateStrings: true, timezone: 'Z' })
  conns.push(conn)
  return conn
}

async function open(url: string, prefix = 'wp_'): Promise<DatabaseHandle> {
  const handle = await openDatabase({ url, prefix })
  handles.push(handle)
  return handle
}

async function showCreate(conn: mysql.Connection, table: string): Promise<string> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>(`SHOW CREATE TABLE \`${table}\``)
  return rows[0]!['Create Table'] as string
}

async function tableExists(conn: mysql.Connection, table: string): Promise<boolean> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [table])
  return Number(rows[0]!.n) === 1
}

/** Index name → its columns in order, from information_schema. */
async function indexes(conn: mysql.Connection, table: string): Promise<Map<string, { unique: boolean; columns: string[] }>> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>(
    'SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY INDEX_NAME, SEQ_IN_INDEX', [table])
  const map = new Map<string, { unique: boolean; columns: string[] }>()
  for (const r of rows) {
    const entry = map.get(r.INDEX_NAME) ?? { unique: Number(r.NON_UNIQUE) === 0, columns: [] }
    entry.columns.push(r.COLUMN_NAME)
    map.set(r.INDEX_NAME, entry)
  }
  return map
}

async function columnPrecision(conn: mysql.Connection, table: string): Promise<Record<string, number | null>> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>(
    "SELECT COLUMN_NAME, DATETIME_PRECISION FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND DATA_TYPE = 'datetime'", [table])
  return Object.fromEntries(rows.map((r) => [r.COLUMN_NAME, r.DATETIME_PRECISION === null ? null : Number(r.DATETIME_PRECISION)]))
}

afterEach(async () => {
  for (const h of handles.splice(0)) await h.close().catch(() => {})
  for (const c of conns.splice(0)) await c.end().catch(() => {})
})
afterAll(async () => {
  for (const name of created) await dropMysqlDatabase(name)
})

/** Every migration's name, in order: what a fresh database gets. */
const ALL = migrations.map((m) => m({ prefix: 'wp_', dialect: 'mysql' }).name)

describe('migrations on MariaDB', () => {
  it('creates {prefix}ai_jobs with the seed\'s columns and indexes, the claim index, InnoDB and utf8mb4_unicode_520_ci', async () => {
    const url = await database('gw_t2_migrations_fresh_mysql')
    const handle = await open(url)
    const report = await runMigrations(handle)
    expect(report).toEqual({ applied: ALL, alreadyApplied: [] })

    const conn = await connect(url)
    const ddl = await showCreate(conn, 'wp_ai_jobs')
    expect(ddl).toMatch(/`id` bigint(\(20\))? unsigned NOT NULL AUTO_INCREMENT/)
    expect(ddl).toMatch(/`user_id` bigint(\(20\))? unsigned NOT NULL DEFAULT '?0'?/)
    expect(ddl).toMatch(/`status` enum\('pending','running','succeeded','failed','canceled'\) NOT NULL DEFAULT 'pending'/)
    expect(ddl).toMatch(/`input_hash` char\(64\) [^,]*NOT NULL/)
    expect(ddl).toMatch(/`request_json` longtext [^,]*NOT NULL/)
    expect(ddl).toMatch(/`result_json` longtext [^,]*DEFAULT NULL/)
    expect(ddl).toMatch(/`error_text` text [^,]*DEFAULT NULL/)
    expect(ddl).toMatch(/`created_at` datetime\(3\) NOT NULL/)
    expect(ddl).toMatch(/`updated_at` datetime\(3\) NOT NULL/)
    expect(ddl).toMatch(/`idempotency_key` varchar\(64\) [^,]*NOT NULL/)
    expect(ddl).toMatch(/`webhook_ts` datetime\(3\) DEFAULT NULL/)
    expect(ddl).toMatch(/PRIMARY KEY \(`id`\)/)
    expect(ddl).toMatch(/UNIQUE KEY `idempotency_key` \(`idempotency_key`\)/)
    expect(ddl).toMatch(/KEY `status_created` \(`status`,`created_at`\)/)
    expect(ddl).toMatch(/KEY `user_created` \(`user_id`,`created_at`\)/)
    expect(ddl).toMatch(/KEY `input_hash` \(`input_hash`\)/)
    expect(ddl).toMatch(/ENGINE=InnoDB/)
    expect(ddl).toMatch(/COLLATE=utf8mb4_unicode_520_ci/)

    const idx = await indexes(conn, 'wp_ai_jobs')
    expect(idx.get('idempotency_key')).toEqual({ unique: true, columns: ['idempotency_key'] })
    expect(idx.get('input_hash')?.unique).toBe(false)
    // The fair claim walks `WHERE status = 'pending' AND priority = ? AND owner_key > ? ORDER BY owner_key, run_after, id`.
    expect(idx.get('fair_claim')).toEqual({ unique: false, columns: ['status', 'priority', 'owner_key', 'run_after', 'id'] })
    expect(idx.has('claim')).toBe(false)
    const locks = await conn.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM wp_ai_claim_locks')
    expect(Number(locks[0][0]!.n)).toBe(256)
    // An owner index for "my jobs, newest first".
    expect([...idx.values()].some((i) => i.columns[0] === 'owner_key' && i.columns[1] === 'created_at')).toBe(true)

    // Every time keeps milliseconds.
    const precision = await columnPrecision(conn, 'wp_ai_jobs')
    for (const [name, p] of Object.entries(precision)) expect(p, name).toBe(3)

    expect(await tableExists(conn, 'wp_ai_gateway_migrations')).toBe(true)
    const [book] = await conn.query<mysql.RowDataPacket[]>('SELECT name, applied_at FROM wp_ai_gateway_migrations')
    expect(book.map((r) => r.name)).toEqual(ALL)
    const bookDdl = await showCreate(conn, 'wp_ai_gateway_migrations')
    expect(bookDdl).toMatch(/ENGINE=InnoDB/)

    // Running them again changes nothing.
    const again = await runMigrations(handle)
    expect(again).toEqual({ applied: [], alreadyApplied: ALL })
    expect(await showCreate(conn, 'wp_ai_jobs')).toBe(ddl)
    const [book2] = await conn.query<mysql.RowDataPacket[]>('SELECT name, applied_at FROM wp_ai_gateway_migrations')
    expect(book2).toEqual(book)
  })

  it('works with a non-default prefix (WP_TABLE_PREFIX=wpx_), through the app', async () => {
    let t: TestApp | undefined
    try {
      t = await buildTestApp({ dialect: 'mysql', name: `gw_t2_migrations_prefix_mysql_${RUN}`, env: { WP_TABLE_PREFIX: 'wpx_' } })
      const url = t.config.databaseUrl
      const conn = await connect(url)
      expect(await tableExists(conn, 'wpx_ai_jobs')).toBe(true)
      expect(await tableExists(conn, 'wpx_ai_gateway_migrations')).toBe(true)
      expect(await tableExists(conn, 'wp_ai_jobs')).toBe(false)
      expect(await tableExists(conn, 'wp_ai_gateway_migrations')).toBe(false)
      expect((await showCreate(conn, 'wpx_ai_jobs'))).toMatch(/COLLATE=utf8mb4_unicode_520_ci/)

      const headers = await bearer({ sub: '2' })
      const res = await t.app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers, payload: { input: 'prefixed' } })
      expect(res.statusCode).toBe(202)
      const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT id, owner_key FROM wpx_ai_jobs')
      expect(rows.map((r) => [Number(r.id), r.owner_key])).toEqual([[res.json().job_id, 'u:2']])
      expect(await t.app.pool.runOnce()).toBe(1)
      const read = await t.app.inject({ method: 'GET', url: `/wp-json/ai/v1/jobs/${res.json().job_id}`, headers })
      expect(read.json().status).toBe('succeeded')
    } finally {
      await t?.close()
    }
  })

  it('brings a seed-shaped table up to date in place, keeping every row', async () => {
    const url = await database('gw_t2_migrations_seed_mysql')
    const conn = await connect(url)
    await conn.query(`CREATE TABLE wp_ai_jobs (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, user_id BIGINT UNSIGNED NOT NULL DEFAULT 0, status ENUM('pending','running','succeeded','failed') NOT NULL DEFAULT 'pending', input_hash CHAR(64) NOT NULL, request_json LONGTEXT NOT NULL, result_json LONGTEXT NULL, error_text TEXT NULL, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, idempotency_key VARCHAR(64) NOT NULL, webhook_ts DATETIME NULL, UNIQUE KEY idempotency_key (idempotency_key), KEY status_created (status, created_at), KEY user_created (user_id, created_at), KEY input_hash (input_hash)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`)
    const hash = (c: string) => c.repeat(64)
    const seed = [
      [10, 3, 'succeeded', hash('a'), '{"model":"echo","input":"old done"}', '{"output":"old result","tokens":3}', null, '2024-05-01 10:00:00', '2024-05-01 10:00:05', 'seed-key-10', '2024-05-01 10:00:05'],
      [11, 4, 'pending', hash('b'), '{"model":"echo","input":"old pending"}', null, null, '2024-05-02 11:00:00', '2024-05-02 11:00:00', 'seed-key-11', null],
      [12, 5, 'running', hash('c'), '{"model":"echo","input":"old running"}', null, null, '2024-05-03 12:00:00', '2024-05-03 12:00:01', 'seed-key-12', null],
      [20, 0, 'failed', hash('d'), '{"model":"echo","input":"old failed"}', null, 'provider said no', '2024-05-04 13:00:00', '2024-05-04 13:00:02', 'seed-key-20', null],
    ]
    await conn.query('INSERT INTO wp_ai_jobs (id, user_id, status, input_hash, request_json, result_json, error_text, created_at, updated_at, idempotency_key, webhook_ts) VALUES ?', [seed])
    // The seed's ENUM has no `canceled` (strict mode refuses it), which is what the migration must fix.
    await expect(conn.query("UPDATE wp_ai_jobs SET status = 'canceled' WHERE id = 20")).rejects.toThrow()
    const seedColumns = ['id', 'user_id', 'status', 'input_hash', 'request_json', 'result_json', 'error_text', 'idempotency_key']

    // A clock an hour ahead: the expired lease the migration gives the running row is long past.
    const clock = manualClock(Date.now() + 3_600_000)
    const config = testConfig({ DATABASE_URL: url })
    const app = await buildApp(config, { logger: false, startWorkers: false, clock, poolOptions: { pollMs: 20, reapEveryMs: 20 } })
    try {
      const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT * FROM wp_ai_jobs ORDER BY id')
      expect(rows.map((r) => seedColumns.map((c) => (c === 'id' || c === 'user_id' ? Number(r[c]) : r[c])))).toEqual(
        seed.map((s) => [s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[9]]))
      expect(rows.map((r) => [r.created_at, r.updated_at, r.webhook_ts])).toEqual(
        seed.map((s) => [`${s[7]}.000`, `${s[8]}.000`, s[10] === null ? null : `${s[10]}.000`]))
      // The queue columns are filled in from the seed's own data.
      expect(rows.map((r) => r.owner_key)).toEqual(['u:3', 'u:4', 'u:5', 'u:0'])
      expect(rows.map((r) => r.model)).toEqual(['echo', 'echo', 'echo', 'echo'])
      expect(rows.map((r) => r.run_after)).toEqual(rows.map((r) => r.created_at))
      expect(rows[2]!.lease_expires_at).not.toBeNull()
      expect(Date.parse(`${String(rows[2]!.lease_expires_at).replace(' ', 'T')}Z`)).toBeLessThan(clock.now())

      const ddl = await showCreate(conn, 'wp_ai_jobs')
      expect(ddl).toMatch(/`status` enum\('pending','running','succeeded','failed','canceled'\)/)
      const precision = await columnPrecision(conn, 'wp_ai_jobs')
      expect(precision.created_at).toBe(3)
      expect(precision.updated_at).toBe(3)
      expect(precision.webhook_ts).toBe(3)
      const idx = await indexes(conn, 'wp_ai_jobs')
      expect(idx.get('idempotency_key')).toEqual({ unique: true, columns: ['idempotency_key'] })
      expect(idx.get('fair_claim')?.columns).toEqual(['status', 'priority', 'owner_key', 'run_after', 'id'])

      // The API reads the old rows as jobs of their owners, with millisecond ISO times.
      const done = await app.inject({ method: 'GET', url: '/wp-json/ai/v1/jobs/10', headers: await bearer({ sub: '3' }, { nowMs: clock.now() }) })
      expect(done.statusCode).toBe(200)
      expect(done.json()).toMatchObject({ job_id: 10, status: 'succeeded', created_at: '2024-05-01T10:00:00.000Z', updated_at: '2024-05-01T10:00:05.000Z', result: { output: 'old result', tokens: 3 } })
      expect((await app.inject({ method: 'GET', url: '/wp-json/ai/v1/jobs/10', headers: await bearer({ sub: '4' }, { nowMs: clock.now() }) })).statusCode).toBe(404)

      // `canceled` is allowed now, and new ids continue after the seed's.
      await conn.query("UPDATE wp_ai_jobs SET status = 'canceled' WHERE id = 20")
      const fresh = await app.inject({ method: 'POST', url: '/wp-json/ai/v1/jobs', headers: await bearer({ sub: '6' }, { nowMs: clock.now() }), payload: { input: 'after the migration' } })
      expect(fresh.statusCode).toBe(202)
      expect(fresh.json().job_id).toBeGreaterThan(20)

      // The old pending row runs through the pool (with the new job); the old running row is not claimed.
      expect(await app.pool.runOnce()).toBe(2)
      const [afterRun] = await conn.query<mysql.RowDataPacket[]>('SELECT id, status, attempts, result_json FROM wp_ai_jobs WHERE id IN (11, 12)')
      const byId = new Map(afterRun.map((r) => [Number(r.id), r]))
      expect(byId.get(11)?.status).toBe('succeeded')
      expect(Number(byId.get(11)?.attempts)).toBe(1)
      expect(JSON.parse(byId.get(11)!.result_json).output).toBe('old pending')
      expect(byId.get(12)?.status).toBe('running')

      // The reaper returns the old running row (its lease expired at the migration) to the queue…
      app.pool.start()
      app.reaper.start()
      await waitFor(async () => {
        const [r] = await conn.query<mysql.RowDataPacket[]>('SELECT status FROM wp_ai_jobs WHERE id = 12')
        return r[0]!.status === 'pending' ? true : undefined
      }, 10_000, 'the reaper to requeue the old running job')
      // …and once its backoff has passed, the pool runs it.
      clock.advance(600_000)
      const finished = await waitFor(async () => {
        const [r] = await conn.query<mysql.RowDataPacket[]>('SELECT status, attempts, result_json FROM wp_ai_jobs WHERE id = 12')
        return r[0]!.status === 'succeeded' ? r[0] : undefined
      }, 10_000, 'the pool to finish the reaped job')
      expect(JSON.parse(finished.result_json).output).toBe('old running')
      expect(Number(finished.attempts)).toBe(1)
    } finally {
      await app.close()
    }
    expect(app.pool.isRunning).toBe(false)

    // A second start migrates nothing more and still has every row.
    const handle = await open(url)
    expect(await runMigrations(handle)).toEqual({ applied: [], alreadyApplied: ALL })
    const [count] = await conn.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM wp_ai_jobs')
    expect(Number(count[0]!.n)).toBe(5)
  })

  it('finishes a seed upgrade that an earlier run left half done', async () => {
    const url = await database('gw_t2_migrations_half_mysql')
    const conn = await connect(url)
    await conn.query(`CREATE TABLE wp_ai_jobs (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, user_id BIGINT UNSIGNED NOT NULL DEFAULT 0, status ENUM('pending','running','succeeded','failed','canceled') NOT NULL DEFAULT 'pending', input_hash CHAR(64) NOT NULL, request_json LONGTEXT NOT NULL, result_json LONGTEXT NULL, error_text TEXT NULL, created_at DATETIME(3) NOT NULL, updated_at DATETIME NOT NULL, idempotency_key VARCHAR(64) NOT NULL, webhook_ts DATETIME NULL, owner_key VARCHAR(140) NOT NULL DEFAULT '', UNIQUE KEY idempotency_key (idempotency_key), KEY status_created (status, created_at), KEY user_created (user_id, created_at), KEY input_hash (input_hash)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_520_ci`)
    await conn.query("INSERT INTO wp_ai_jobs (user_id, status, input_hash, request_json, created_at, updated_at, idempotency_key) VALUES (7, 'pending', REPEAT('e', 64), '{\"input\":\"x\"}', '2024-06-01 00:00:00.123', '2024-06-01 00:00:00', 'half-1')")
    const handle = await open(url)
    expect((await runMigrations(handle)).applied).toEqual(ALL)
    const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT owner_key, created_at, updated_at, run_after FROM wp_ai_jobs')
    expect(rows[0]).toMatchObject({ owner_key: 'u:7', created_at: '2024-06-01 00:00:00.123', updated_at: '2024-06-01 00:00:00.000', run_after: '2024-06-01 00:00:00.123' })
    expect((await columnPrecision(conn, 'wp_ai_jobs')).updated_at).toBe(3)
  })

  it('applies once when two migrations start together (GET_LOCK)', async () => {
    const url = await database('gw_t2_migrations_concurrent_mysql')
    const [a, b] = [await open(url), await open(url)]
    const reports = await Promise.all([runMigrations(a), runMigrations(b)])
    const applied = reports.flatMap((r) => r.applied)
    const skipped = reports.flatMap((r) => r.alreadyApplied)
    expect(applied).toEqual(ALL)
    expect(skipped).toEqual(ALL)
    const conn = await connect(url)
    const [book] = await conn.query<mysql.RowDataPacket[]>('SELECT name FROM wp_ai_gateway_migrations')
    expect(book.map((r) => r.name)).toEqual(ALL)
    expect(await tableExists(conn, 'wp_ai_jobs')).toBe(true)
  })

  it('waits for the migration lock (GET_LOCK) that another replica holds', async () => {
    // A database name of the longest kind WordPress hosts hand out: the lock name must still fit
    // MySQL's 64-character limit for user locks.
    const name = `gw_t2_migrations_lock_mysql_${'x'.repeat(64 - 'gw_t2_migrations_lock_mysql_'.length)}`
    expect(name).toHaveLength(64)
    const url = await database(name)
    const other = await connect(url)
    // The implementation's lock name (src/db/migrate.ts), taken here as a replica would hold it.
    const lock = "CONCAT('wp-ai-gateway:migrate:', SHA1(CONCAT(DATABASE(), ':', 'wp_')))"
    const [[held]] = await other.query<mysql.RowDataPacket[]>(`SELECT GET_LOCK(${lock}, 0) AS ok, LENGTH(${lock}) AS len`)
    expect(Number(held!.ok)).toBe(1)
    expect(Number(held!.len)).toBeLessThanOrEqual(64)

    const handle = await open(url)
    const migrating = runMigrations(handle)
    const settled = migrating.then(() => 'done', () => 'failed')
    // The migration's connection is seen waiting on the user lock, and has created nothing.
    await waitFor(async () => {
      const [rows] = await other.query<mysql.RowDataPacket[]>("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO LIKE '%GET_LOCK%' AND ID <> CONNECTION_ID()")
      return Number(rows[0]!.n) > 0 ? true : undefined
    }, 10_000, 'the migration to wait for the lock')
    expect(await tableExists(other, 'wp_ai_jobs')).toBe(false)
    expect(await tableExists(other, 'wp_ai_gateway_migrations')).toBe(false)
    expect(await Promise.race([settled, Promise.resolve('pending')])).toBe('pending')

    await other.query(`SELECT RELEASE_LOCK(${lock})`)
    expect(await migrating).toEqual({ applied: ALL, alreadyApplied: [] })
    expect(await tableExists(other, 'wp_ai_jobs')).toBe(true)
    // And it let go of the lock afterwards.
    const [[free]] = await other.query<mysql.RowDataPacket[]>(`SELECT IS_FREE_LOCK(${lock}) AS free`)
    expect(Number(free!.free)).toBe(1)
  })

  it('opens MariaDB sessions in READ COMMITTED, UTC and strict mode', async () => {
    const url = await database('gw_t2_migrations_session_mysql')
    const handle = await open(url)
    const { sql } = await import('kysely')
    const isolation = await sql<{ v: string }>`SELECT @@session.tx_isolation AS v`.execute(handle.db)
      .catch(() => sql<{ v: string }>`SELECT @@session.transaction_isolation AS v`.execute(handle.db))
    expect(isolation.rows[0]!.v).toBe('READ-COMMITTED')
    const session = await sql<{ tz: string; mode: string }>`SELECT @@session.time_zone AS tz, @@session.sql_mode AS mode`.execute(handle.db)
    expect(session.rows[0]!.tz).toBe('+00:00')
    expect(session.rows[0]!.mode.split(',')).toContain('STRICT_TRANS_TABLES')
  })

  it('runs as `npm run migrate` (src/db/migrate-cli.ts) and exits 0', async () => {
    const url = await database('gw_t2_migrations_cli_mysql')
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: url, WP_TABLE_PREFIX: 'wp_' }
    const first = await run(process.execPath, [TSX, 'src/db/migrate-cli.ts'], { cwd: ROOT, env })
    expect(first.stdout.trim()).toBe(`migrations: ${ALL.length} applied (${ALL.join(', ')}), 0 already applied`)
    const second = await run(process.execPath, [TSX, 'src/db/migrate-cli.ts'], { cwd: ROOT, env })
    expect(second.stdout.trim()).toBe(`migrations: 0 applied (none), ${ALL.length} already applied`)
    const conn = await connect(url)
    expect(await tableExists(conn, 'wp_ai_jobs')).toBe(true)
  })

  it('`npm run migrate` exits 1 with one line when the database cannot be reached', async () => {
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', DATABASE_URL: 'mysql://root@127.0.0.1:1/nothing' }
    const failed = await run(process.execPath, [TSX, 'src/db/migrate-cli.ts'], { cwd: ROOT, env }).then(() => undefined, (err: { code: number; stderr: string }) => err)
    expect(failed?.code).toBe(1)
    expect(failed?.stderr.trim().split('\n')).toHaveLength(1)
    expect(failed?.stderr).toMatch(/^migrate: /)
  })
})
