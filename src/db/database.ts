import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import SQLite from 'better-sqlite3'
import {
  Kysely, MysqlDialect, OperationNodeTransformer, SqliteDialect, sql,
  type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs,
  type MysqlPool, type MysqlPoolConnection, type QueryResult, type RootOperationNode, type TableNode, type UnknownRow,
} from 'kysely'
import { createPool, type Pool, type PoolOptions } from 'mysql2'
import type { Database } from './schema.js'

export type Dialect = 'mysql' | 'sqlite'

export interface DatabaseHandle {
  db: Kysely<Database>
  dialect: Dialect
  /** The WordPress table prefix, e.g. `wp_`. */
  prefix: string
  /** `SELECT VERSION()` on MySQL/MariaDB, `sqlite_version()` on SQLite. */
  serverVersion: string
  /** `INSERT … RETURNING` works: SQLite and MariaDB (10.5+) have it, MySQL 8 does not. */
  insertReturning: boolean
  /** MySQL: change the per-query timeout (0 = none, used while migrations run). */
  setQueryTimeout(ms: number): void
  /** The per-query timeout in force. */
  queryTimeoutMs(): number
  close(): Promise<void>
}

export interface DatabaseOptions {
  url: string
  prefix: string
  /** Connections in the MySQL pool. */
  poolSize?: number
  /** MySQL: a query that gets no answer for this long fails (and the request gets a 503). */
  queryTimeoutMs?: number
  /** MySQL: reads the binary-log settings the start-up check looks at; `SELECT @@log_bin, @@binlog_format` unless given. */
  serverVariables?: ServerVariablesReader | undefined
}

/** The binary-log settings of a MySQL/MariaDB session, as the server reports them. */
export interface ServerVariables {
  /** `@@log_bin`: 0/1 on MariaDB and MySQL 8; `OFF`/`ON` is read too. */
  log_bin: unknown
  /** `@@binlog_format`: `ROW`, `MIXED` or `STATEMENT`. */
  binlog_format: unknown
}

export type ServerVariablesReader = () => Promise<ServerVariables>

/** Far above any statement the gateway runs (they take milliseconds), well below a client's patience. */
export const DEFAULT_QUERY_TIMEOUT_MS = 10_000
/** A streamed query (the usage export) may take this long in all. */
export const STREAM_QUERY_TIMEOUT_MS = 15 * 60_000

class PrefixTransformer extends OperationNodeTransformer {
  constructor(private readonly prefix: string) {
    super()
  }

  protected override transformTable(node: TableNode): TableNode {
    const table = super.transformTable(node)
    const name = table.table.identifier.name
    return { ...table, table: { ...table.table, identifier: { ...table.table.identifier, name: this.prefix + name } } }
  }
}

/**
 * Adds the WordPress table prefix to every table a query names, so the code can say `ai_jobs`
 * or `usermeta` and the SQL reads `wp_ai_jobs` or `wp_usermeta`.
 */
export class TablePrefixPlugin implements KyselyPlugin {
  private readonly transformer: PrefixTransformer
  constructor(prefix: string) {
    this.transformer = new PrefixTransformer(prefix)
  }
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return this.transformer.transformNode(args.node)
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

const MIN_MYSQL = [8, 0, 1]
const MIN_MARIADB = [10, 6, 0]

/** Refuses servers without `SKIP LOCKED` (MySQL < 8.0.1, MariaDB < 10.6). */
export function checkServerVersion(version: string): void {
  const isMaria = /mariadb/i.test(version)
  const parts = (version.match(/^(\d+)\.(\d+)\.(\d+)/) ?? []).slice(1).map(Number)
  const min = isMaria ? MIN_MARIADB : MIN_MYSQL
  if (parts.length !== 3) throw new Error(`cannot read the database version from "${version}"`)
  for (let i = 0; i < 3; i++) {
    if (parts[i]! > min[i]!) return
    if (parts[i]! < min[i]!) {
      throw new Error(`${isMaria ? 'MariaDB' : 'MySQL'} ${version} is too old: wp-ai-gateway needs ${isMaria ? 'MariaDB 10.6' : 'MySQL 8.0.1'} or newer (for FOR UPDATE SKIP LOCKED)`)
    }
  }
}

/** The session's binary-log settings; the session value is the one this connection's statements are logged with. */
export async function readServerVariables(db: Kysely<any>): Promise<ServerVariables> {
  const row = await sql<ServerVariables>`SELECT @@log_bin AS log_bin, @@binlog_format AS binlog_format`.execute(db)
  return row.rows[0]!
}

function isOn(value: unknown): boolean {
  if (typeof value === 'number' || typeof value === 'bigint') return Number(value) === 1
  if (typeof value === 'string') return /^(1|on)$/i.test(value.trim())
  return false
}

/**
 * Refuses statement-based binary logging (SPEC §1, §12). What a statement with `SKIP LOCKED` sees
 * depends on the locks other sessions hold at that instant, so MySQL and MariaDB count such
 * statements unsafe to log as text: a replica or a restore from the binary log replaying them could
 * change other rows. Row-based logging records the rows themselves; MIXED logs unsafe statements
 * as rows.
 */
export function checkBinaryLogging(vars: ServerVariables): void {
  if (!isOn(vars.log_bin)) return
  if (String(vars.binlog_format ?? '').trim().toUpperCase() !== 'STATEMENT') return
  throw new Error("binlog_format=STATEMENT with binary logging on (log_bin=1) is unsafe with the job queue's FOR UPDATE SKIP LOCKED (a replica or a restore replaying the binary log could change other rows): set binlog_format=ROW or MIXED on the database server")
}

export function mysqlPoolOptions(url: string, poolSize: number): PoolOptions {
  const u = new URL(url)
  const socket = u.searchParams.get('socket')
  return {
    ...(socket ? { socketPath: socket } : { host: u.hostname || '127.0.0.1', port: u.port ? Number(u.port) : 3306 }),
    user: decodeURIComponent(u.username || 'root'),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')),
    connectionLimit: poolSize,
    maxIdle: poolSize,
    idleTimeout: 60_000,
    enableKeepAlive: true,
    connectTimeout: 5_000,
    charset: 'utf8mb4_unicode_520_ci',
    timezone: 'Z',
    // Times come back as text in the same form the repository writes (src/db/time.ts).
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: false,
    decimalNumbers: true,
  }
}

/**
 * mysql2 has no default query timeout: a database that stops answering without closing the
 * connection (a network partition, a stalled proxy) would hold requests forever. Every query gets
 * `timeoutMs()` (0 = none, while migrations run); a connection whose query timed out is destroyed,
 * because its protocol state is unknown, so the pool opens a fresh one.
 */
function withQueryTimeout(pool: Pool, timeoutMs: () => number): MysqlPool {
  return {
    getConnection(callback) {
      pool.getConnection((error, conn) => {
        if (error) return callback(error, undefined as unknown as MysqlPoolConnection)
        const wrapped: MysqlPoolConnection = {
          query: ((sql: string, parameters: unknown[], cb?: (error: unknown, result: unknown) => void) => {
            const timeout = timeoutMs()
            // A query read as a stream (an export) is paced by its client, so it gets the streaming
            // bound instead: long enough for any export, still finite if the database goes silent.
            if (!cb) return conn.query(timeout > 0 ? { sql, timeout: Math.max(timeout, STREAM_QUERY_TIMEOUT_MS) } : { sql }, parameters)
            const query = timeout > 0 ? { sql, timeout } : { sql }
            conn.query(query, parameters, (err: unknown, result: unknown) => {
              if ((err as { code?: string } | null)?.code === 'PROTOCOL_SEQUENCE_TIMEOUT') conn.destroy()
              cb(err, result)
            })
          }) as MysqlPoolConnection['query'],
          release: () => conn.release(),
        }
        callback(null, wrapped)
      })
    },
    end: (callback) => pool.end(callback),
  }
}

function openMysql(options: DatabaseOptions): { db: Kysely<Database>; pool: Pool; setQueryTimeout: (ms: number) => void } {
  const pool = createPool(mysqlPoolOptions(options.url, options.poolSize ?? 10))
  pool.on('connection', (conn) => {
    // READ COMMITTED: under REPEATABLE READ a claim that scans past the last pending row takes a
    // gap lock that stalls concurrent INSERTs. UTC so DATETIME(3) values mean the same everywhere.
    // Two statements: `SET TRANSACTION` takes no other variables, and the variable's name differs
    // (`tx_isolation` on MariaDB before 11.1, `transaction_isolation` on MySQL 8). mysql2 runs them
    // in order before the first query the pool hands this connection to.
    conn.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED')
    conn.query("SET SESSION time_zone = '+00:00', sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')")
  })
  let queryTimeoutMs = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS
  const db = new Kysely<Database>({
    dialect: new MysqlDialect({ pool: withQueryTimeout(pool, () => queryTimeoutMs) }),
    plugins: [new TablePrefixPlugin(options.prefix)],
  })
  return { db, pool, setQueryTimeout: (ms) => { queryTimeoutMs = ms } }
}

function openSqlite(options: DatabaseOptions): { db: Kysely<Database>; raw: SQLite.Database } {
  const path = options.url.replace(/^sqlite:(\/\/)?/, '')
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const raw = new SQLite(path)
  raw.pragma('journal_mode = WAL')
  raw.pragma('synchronous = NORMAL')
  raw.pragma('busy_timeout = 5000')
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: raw }), plugins: [new TablePrefixPlugin(options.prefix)] })
  return { db, raw }
}

export function dialectOf(url: string): Dialect {
  if (url.startsWith('sqlite:')) return 'sqlite'
  if (url.startsWith('mysql://') || url.startsWith('mariadb://')) return 'mysql'
  throw new Error(`DATABASE_URL must start with mysql:// or sqlite: (got "${url.split(':')[0]}:")`)
}

/**
 * Opens the database and checks the server: its version (SKIP LOCKED) and, on MySQL/MariaDB, that
 * binary logging is not statement-based. It does not run migrations.
 */
export async function openDatabase(options: DatabaseOptions): Promise<DatabaseHandle> {
  const dialect = dialectOf(options.url)
  if (dialect === 'sqlite') {
    const { db } = openSqlite(options)
    const row = await sql<{ v: string }>`select sqlite_version() as v`.execute(db)
    return { db, dialect, prefix: options.prefix, serverVersion: row.rows[0]!.v, insertReturning: true, setQueryTimeout: () => {}, queryTimeoutMs: () => 0, close: () => db.destroy() }
  }
  let current = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS
  const { db, setQueryTimeout } = openMysql({ ...options, url: options.url.replace(/^mariadb:/, 'mysql:') })
  try {
    // The handshake reports `5.5.5-10.x-MariaDB` on MariaDB; VERSION() is the real one.
    const row = await sql<{ v: string }>`SELECT VERSION() AS v`.execute(db)
    const version = row.rows[0]!.v
    checkServerVersion(version)
    checkBinaryLogging(await (options.serverVariables ?? (() => readServerVariables(db)))())
    return {
      db, dialect, prefix: options.prefix, serverVersion: version, insertReturning: /mariadb/i.test(version),
      setQueryTimeout: (ms) => {
        current = ms
        setQueryTimeout(ms)
      },
      queryTimeoutMs: () => current,
      close: () => db.destroy(),
    }
  } catch (err) {
    await db.destroy().catch(() => {})
    throw err
  }
}
