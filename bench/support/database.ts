/**
 * The bench's own databases on the shared MariaDB, and what it reads from them. The gateway
 * creates `wp_ai_jobs` with its migrations; the baseline (and the WordPress PHP route) then write
 * rows into a table of exactly that shape, through an insert plan read from information_schema so
 * the baseline keeps working while the gateway's schema grows.
 */
import { readFileSync } from 'node:fs'
import mysql, { type Connection, type RowDataPacket } from 'mysql2/promise'

export class BenchDatabase {
  private constructor(private readonly conn: Connection, readonly name: string) {}

  static async connect(serverUrl: string, name: string): Promise<BenchDatabase> {
    const conn = await mysql.createConnection({ uri: `${serverUrl}/`, multipleStatements: true, dateStrings: true, timezone: 'Z' })
    return new BenchDatabase(conn, name)
  }

  async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    const [rows] = await this.conn.query<RowDataPacket[]>(sql, params)
    return rows as T[]
  }

  /** A fresh database holding the WordPress users, sessions and roles of the test fixtures. */
  async recreate(withWordPressUsers: boolean): Promise<void> {
    await this.drop()
    await this.conn.query(`CREATE DATABASE \`${this.name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci`)
    await this.conn.query(`USE \`${this.name}\``)
    if (withWordPressUsers) {
      await this.conn.query(readFileSync(new URL('../../test/fixtures/wordpress/wordpress-users.sql', import.meta.url), 'utf8'))
    }
  }

  async drop(): Promise<void> {
    await this.conn.query(`DROP DATABASE IF EXISTS \`${this.name}\``)
  }

  async version(): Promise<string> {
    const [row] = await this.query<{ v: string }>('SELECT VERSION() AS v')
    return row!.v
  }

  async close(): Promise<void> {
    await this.conn.end()
  }
}

/** How the baseline fills one column of a new row. */
export type ColumnValue =
  | { kind: 'input_hash' }
  | { kind: 'request_json' }
  | { kind: 'now' }
  | { kind: 'random_key' }
  | { kind: 'constant'; value: string | number }

export interface InsertPlan {
  table: string
  columns: { name: string; value: ColumnValue }[]
}

// What a naive create writes; columns the table does not have are left out.
const KNOWN_COLUMNS: Record<string, ColumnValue> = {
  user_id: { kind: 'constant', value: 1 },
  status: { kind: 'constant', value: 'pending' },
  input_hash: { kind: 'input_hash' },
  request_json: { kind: 'request_json' },
  created_at: { kind: 'now' },
  updated_at: { kind: 'now' },
  idempotency_key: { kind: 'random_key' },
  owner_key: { kind: 'constant', value: 'u:1' },
  model: { kind: 'constant', value: 'echo' },
  run_after: { kind: 'now' },
}

/**
 * The columns one INSERT must write into `db.table`: the known ones it has, plus a zero value for
 * any other NOT NULL column without a default (so a column the gateway adds later cannot break
 * the baseline).
 */
export async function insertPlan(db: BenchDatabase, table: string): Promise<InsertPlan> {
  const rows = await db.query<{ name: string; nullable: string; def: string | null; extra: string; type: string }>(
    `SELECT COLUMN_NAME AS name, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS def, EXTRA AS extra, DATA_TYPE AS type
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
    [db.name, table])
  if (rows.length === 0) throw new Error(`${db.name}.${table} does not exist: the gateway's migrations did not create it`)
  const columns: InsertPlan['columns'] = []
  for (const r of rows) {
    const name = r.name.toLowerCase()
    const known = KNOWN_COLUMNS[name]
    if (known) {
      columns.push({ name: r.name, value: known })
      continue
    }
    const required = r.nullable === 'NO' && r.def === null && !/auto_increment|generated/i.test(r.extra)
    if (!required) continue
    const type = r.type.toLowerCase()
    const value: ColumnValue = /date|time/.test(type)
      ? { kind: 'now' }
      : /int|decimal|float|double|bit/.test(type) ? { kind: 'constant', value: 0 } : { kind: 'constant', value: '' }
    columns.push({ name: r.name, value })
  }
  return { table, columns }
}

/** A MariaDB DATETIME(3) value, UTC, as "YYYY-MM-DD HH:MM:SS.mmm" strings read with dateStrings. */
export function parseUtc(value: string): number {
  return Date.parse(`${value.replace(' ', 'T')}Z`)
}
