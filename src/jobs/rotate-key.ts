import type { DatabaseHandle } from '../db/database.js'
import { findRequests, listRequestHeads, replaceRequestJson, retryOnLockConflict } from '../db/jobs-repository.js'
import { openRequest, RequestUnreadable, sealedForm, sealRequest, type Keyring, type SealedForm } from './request-crypto.js'

/** How the table's `request_json` values are stored, by form. */
export interface KeyCensus {
  rows: number
  plain: number
  /** Sealed in the first form, `aes256gcm:<base64>`, which names no key. */
  withoutId: number
  byKeyId: Map<string, number>
}

export interface RotateOptions {
  /** Rows per batch, by id (default 500). */
  batchSize?: number
  /** Seal plain rows too (written before AI_ENCRYPTION_KEY was set); off by default. */
  includePlain?: boolean
  onProgress?: (event: RotateEvent) => void
}

export type RotateEvent =
  | { kind: 'census'; phase: 'before' | 'after'; census: KeyCensus }
  | { kind: 'batch'; batch: BatchResult }

export interface BatchResult {
  /** The first and last id the batch looked at. */
  fromId: number
  toId: number
  rotated: number
  /** Rows whose `request_json` was no longer what the batch read: left alone. */
  changedMeanwhile: number
  unreadable: { id: number; message: string }[]
}

export interface RotateReport {
  before: KeyCensus
  after: KeyCensus
  rotated: number
  changedMeanwhile: number
  unreadable: { id: number; message: string }[]
  /** Rows still needing the first key after the run (written under an old key meanwhile, or unreadable). */
  remaining: number
}

/** `1 row`, `2 rows`. */
export function rowCount(n: number): string {
  return `${n} ${n === 1 ? 'row' : 'rows'}`
}

/** A rotation that cannot finish: rows name keys that AI_ENCRYPTION_KEY does not have. */
export class MissingKeys extends Error {
  constructor(readonly ids: { id: string; rows: number }[]) {
    super(`rows name encryption keys that are not in AI_ENCRYPTION_KEY: ${ids.map((k) => `"${k.id}" (${rowCount(k.rows)})`).join(', ')}; add them as id:base64 entries after the first one and run again`)
    this.name = 'MissingKeys'
  }
}

export const DEFAULT_BATCH_SIZE = 500
const CENSUS_BATCH = 5_000

/** Does a row in this form need re-sealing with the first key? */
export function needsRotation(form: SealedForm, keyring: Keyring, includePlain: boolean): boolean {
  if (form.kind === 'plain') return includePlain
  return form.keyId !== keyring.current.id
}

/** Counts the rows by the key that sealed them, reading only the start of each, a range of ids at a time. */
export async function keyCensus(handle: DatabaseHandle): Promise<KeyCensus> {
  const census: KeyCensus = { rows: 0, plain: 0, withoutId: 0, byKeyId: new Map() }
  for (let after = 0; ;) {
    const heads = await listRequestHeads(handle.db, after, CENSUS_BATCH)
    if (heads.length === 0) return census
    for (const { head } of heads) {
      census.rows++
      const form = sealedForm(head)
      if (form.kind === 'plain') census.plain++
      else if (form.keyId === undefined) census.withoutId++
      else census.byKeyId.set(form.keyId, (census.byKeyId.get(form.keyId) ?? 0) + 1)
    }
    after = heads[heads.length - 1]!.id
  }
}

/** The key ids rows name that the keyring lacks, with their row counts. */
export function missingKeyIds(census: KeyCensus, keyring: Keyring): { id: string; rows: number }[] {
  return [...census.byKeyId].filter(([id]) => !keyring.byId.has(id)).map(([id, rows]) => ({ id, rows })).sort((a, b) => a.id.localeCompare(b.id))
}

/** Rows that still need the first key (and, with `includePlain`, plain rows). */
export function remainingIn(census: KeyCensus, keyring: Keyring, includePlain: boolean): number {
  let n = includePlain ? census.plain : 0
  if (keyring.current.id !== undefined) n += census.withoutId
  for (const [id, rows] of census.byKeyId) if (id !== keyring.current.id) n += rows
  return n
}

/**
 * One batch: the next `limit` rows after `afterId` by id; those sealed with another key than the
 * first (and plain ones with `includePlain`) are opened and sealed again with the first key, under
 * the same idempotency key, then written in one short transaction, each UPDATE fenced on the value
 * it read. Returns undefined when no row is left after `afterId`.
 *
 * A running job is safe: its worker read and opened the request at the claim, and any later read
 * (a claim after a lost lease, the next dispatch) finds the same request under the first key,
 * which every replica has. Only `request_json` changes, so the worker's fenced writes (status,
 * lease owner) still match, and a claim that meets a row this transaction holds skips it
 * (SKIP LOCKED) until the next poll.
 */
export async function rotateBatch(handle: DatabaseHandle, keyring: Keyring, afterId: number, limit: number, includePlain = false): Promise<BatchResult | undefined> {
  const heads = await listRequestHeads(handle.db, afterId, limit)
  if (heads.length === 0) return undefined
  const batch: BatchResult = { fromId: heads[0]!.id, toId: heads[heads.length - 1]!.id, rotated: 0, changedMeanwhile: 0, unreadable: [] }
  const wanted = heads.filter((h) => needsRotation(sealedForm(h.head), keyring, includePlain)).map((h) => h.id)
  const writes: { id: number; from: string; to: string }[] = []
  for (const row of await findRequests(handle.db, wanted)) {
    const id = Number(row.id)
    if (!needsRotation(sealedForm(row.request_json), keyring, includePlain)) continue
    try {
      const plain = openRequest(row.request_json, keyring, row.idempotency_key)
      writes.push({ id, from: row.request_json, to: sealRequest(plain, keyring, row.idempotency_key) })
    } catch (err) {
      if (!(err instanceof RequestUnreadable)) throw err
      batch.unreadable.push({ id, message: err.message })
    }
  }
  if (writes.length > 0) {
    // Lock conflicts with finishing workers roll the whole transaction back; every write is
    // fenced on the value read, so running it again is safe.
    const written = await retryOnLockConflict(() => handle.db.transaction().execute(async (trx) => {
      let n = 0
      for (const w of writes) if (await replaceRequestJson(trx, handle.dialect, w.id, w.from, w.to)) n++
      return n
    }))
    batch.rotated = written
    batch.changedMeanwhile = writes.length - written
  }
  return batch
}

/**
 * `npm run rotate-key`: every row sealed with a key other than the first is sealed again with the
 * first, batch by batch. Refuses to start (MissingKeys, before any write) when rows name keys the
 * keyring lacks. Keeps no progress of its own: rows already on the first key are what it skips,
 * so an interrupted run simply runs again from the start. Ends with a second census.
 */
export async function rotateKeys(handle: DatabaseHandle, keyring: Keyring, options: RotateOptions = {}): Promise<RotateReport> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE
  const includePlain = options.includePlain ?? false
  const before = await keyCensus(handle)
  options.onProgress?.({ kind: 'census', phase: 'before', census: before })
  const missing = missingKeyIds(before, keyring)
  if (missing.length > 0) throw new MissingKeys(missing)
  const report = { rotated: 0, changedMeanwhile: 0, unreadable: [] as { id: number; message: string }[] }
  if (remainingIn(before, keyring, includePlain) > 0) {
    for (let after = 0; ;) {
      const batch = await rotateBatch(handle, keyring, after, batchSize, includePlain)
      if (!batch) break
      report.rotated += batch.rotated
      report.changedMeanwhile += batch.changedMeanwhile
      report.unreadable.push(...batch.unreadable)
      options.onProgress?.({ kind: 'batch', batch })
      after = batch.toId
    }
  }
  const after = await keyCensus(handle)
  options.onProgress?.({ kind: 'census', phase: 'after', census: after })
  return { before, after, ...report, remaining: remainingIn(after, keyring, includePlain) }
}
