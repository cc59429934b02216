/**
 * All SQL on `{prefix}ai_usage`, the settled tokens per UTC day and owner that budgets are
 * rebuilt from (SPEC §8), and the open reservations of `{prefix}ai_jobs` they are added to.
 */
import { sql, type Kysely, type Transaction } from 'kysely'
import type { DatabaseHandle } from './database.js'
import type { Database, DbTime } from './schema.js'
import { toDbTime } from './time.js'

type Db = Kysely<Database> | Transaction<Database>

/** What a terminal transition settles into the usage table (SPEC §8). */
export interface Settlement {
  ownerKey: string
  userId: number
  /** The job counts in the windows of its `created_at`. */
  createdAt: DbTime
  /** Tokens the job's provider calls cost over all its attempts. */
  tokens: number
  /** Calls that answered without reporting usage, each charged its reservation. */
  unmeteredCalls: number
  /** 1 when this settles a job; 0 for a late charge to a job already settled. */
  jobs: number
}

/** Adds settlements to their owners' day rows (one upsert per day and owner). */
export async function addUsage(handle: Pick<DatabaseHandle, 'dialect'>, db: Db, settlements: readonly Settlement[]): Promise<void> {
  const rows = new Map<string, { day: string; owner_key: string; user_id: number; tokens: number; jobs: number; unmetered_calls: number }>()
  for (const s of settlements) {
    const day = s.createdAt.slice(0, 10)
    const key = `${day} ${s.ownerKey}`
    const row = rows.get(key) ?? { day, owner_key: s.ownerKey, user_id: s.userId, tokens: 0, jobs: 0, unmetered_calls: 0 }
    row.tokens += s.tokens
    row.jobs += s.jobs
    row.unmetered_calls += s.unmeteredCalls
    rows.set(key, row)
  }
  if (rows.size === 0) return
  const insert = db.insertInto('ai_usage').values([...rows.values()])
  if (handle.dialect === 'mysql') {
    await insert.onDuplicateKeyUpdate({
      tokens: sql`tokens + VALUES(tokens)`,
      jobs: sql`jobs + VALUES(jobs)`,
      unmetered_calls: sql`unmetered_calls + VALUES(unmetered_calls)`,
    }).execute()
  } else {
    await insert.onConflict((oc) => oc.columns(['day', 'owner_key']).doUpdateSet({
      tokens: sql`tokens + excluded.tokens`,
      jobs: sql`jobs + excluded.jobs`,
      unmetered_calls: sql`unmetered_calls + excluded.unmetered_calls`,
    })).execute()
  }
}

/** Settled tokens in days [fromDay, toDay) (`YYYY-MM-DD`), of one owner or (undefined) everyone. */
export async function settledTokens(db: Db, ownerKey: string | undefined, fromDay: string, toDay: string): Promise<number> {
  let q = db.selectFrom('ai_usage').select(sql<number>`COALESCE(SUM(tokens), 0)`.as('n')).where('day', '>=', fromDay).where('day', '<', toDay)
  if (ownerKey !== undefined) q = q.where('owner_key', '=', ownerKey)
  return Number((await q.executeTakeFirst())?.n ?? 0)
}

/**
 * Tokens reserved by open jobs created in [fromMs, toMs), of one owner or (undefined) everyone.
 * Only pending and running jobs hold a reservation: every terminal transition settles it in the
 * same transaction. The owner's query reads `owner_created`, the site's `status_created`.
 */
export async function reservedTokens(db: Db, ownerKey: string | undefined, fromMs: number, toMs: number): Promise<number> {
  let q = db.selectFrom('ai_jobs').select(sql<number>`COALESCE(SUM(reserved_tokens), 0)`.as('n'))
    .where('status', 'in', ['pending', 'running'])
    .where('created_at', '>=', toDbTime(fromMs)).where('created_at', '<', toDbTime(toMs))
  if (ownerKey !== undefined) q = q.where('owner_key', '=', ownerKey)
  return Number((await q.executeTakeFirst())?.n ?? 0)
}

/**
 * Locks a budget's name on this connection (the checks made while Redis is down): held until
 * unlockBudgets, which the caller runs after its transaction committed.
 */
export async function lockBudget(handle: Pick<DatabaseHandle, 'dialect' | 'prefix'>, conn: Kysely<Database>, name: string): Promise<void> {
  if (handle.dialect !== 'mysql') return
  // A named lock, scoped by database and prefix like the migration lock; released at commit by
  // the caller (GET_LOCK is held by the session, not the transaction).
  const got = await sql<{ ok: number | null }>`SELECT GET_LOCK(CONCAT('wp-ai-gateway:budget:', SHA1(CONCAT(DATABASE(), ':', ${handle.prefix}, ':', ${name}))), 5) AS ok`.execute(conn)
  if (Number(got.rows[0]?.ok) !== 1) throw Object.assign(new Error('could not take a budget lock within 5 s'), { code: 'ER_LOCK_WAIT_TIMEOUT', errno: 1205 })
}

export async function unlockBudgets(handle: Pick<DatabaseHandle, 'dialect' | 'prefix'>, conn: Kysely<Database>, names: readonly string[]): Promise<void> {
  if (handle.dialect !== 'mysql') return
  for (const name of names) {
    await sql`SELECT RELEASE_LOCK(CONCAT('wp-ai-gateway:budget:', SHA1(CONCAT(DATABASE(), ':', ${handle.prefix}, ':', ${name}))))`.execute(conn)
  }
}

/** The owners who settled the most tokens in days [fromDay, toDay), WordPress users only (`u:`). */
export async function topUsage(db: Db, fromDay: string, toDay: string, limit: number): Promise<{ ownerKey: string; userId: number; tokens: number }[]> {
  const rows = await db.selectFrom('ai_usage').select(['owner_key', sql<number>`MAX(user_id)`.as('user_id'), sql<number>`SUM(tokens)`.as('tokens')])
    .where('day', '>=', fromDay).where('day', '<', toDay).where('owner_key', 'like', 'u:%')
    .groupBy('owner_key').orderBy(sql`SUM(tokens)`, 'desc').limit(limit).execute()
  return rows.map((r) => ({ ownerKey: r.owner_key, userId: Number(r.user_id), tokens: Number(r.tokens) }))
}

/** The WordPress users with the most tokens reserved by open jobs created in [fromMs, toMs). */
export async function topReserved(db: Db, fromMs: number, toMs: number, limit: number): Promise<{ ownerKey: string; userId: number; tokens: number }[]> {
  const rows = await db.selectFrom('ai_jobs').select(['owner_key', sql<number>`MAX(user_id)`.as('user_id'), sql<number>`SUM(reserved_tokens)`.as('tokens')])
    .where('status', 'in', ['pending', 'running'])
    .where('created_at', '>=', toDbTime(fromMs)).where('created_at', '<', toDbTime(toMs))
    .where('user_id', '>', 0).where('reserved_tokens', '>', 0)
    .groupBy('owner_key').orderBy(sql`SUM(reserved_tokens)`, 'desc').limit(limit).execute()
  return rows.map((r) => ({ ownerKey: r.owner_key, userId: Number(r.user_id), tokens: Number(r.tokens) }))
}
