import { randomBytes } from 'node:crypto'
import { join, resolve } from 'node:path'
import type { DatabaseHandle } from '../db/database.js'
import {
  deleteJobsById, findJobsByIds, highestIdCreatedBefore, insertArchiveBatch, jobVersions, listArchivable, lockJobVersions,
  setArchiveBatchState, unfinishedArchiveBatches, withNamedLock, type ArchiveBatchRow,
} from '../db/archive-repository.js'
import { retryOnLockConflict, type JobRow } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { exists, readArchiveRows, removeArchiveFile, rewriteArchiveFile, writeArchiveFile } from './archive-files.js'

/**
 * What the data lifecycle does beyond the job table, injected: the stored results (SPEC §12,
 * large results kept outside the table) are deleted and inlined through these.
 */
export interface LifecycleHooks {
  /**
   * Called with whole rows (every column, `result_ref` included) just before they are deleted by
   * the archive or erased; deletes what they keep elsewhere. Returns how many stored results it
   * removed (counted in an erase's `results_erased`). Must be idempotent: a run killed after it
   * and re-run calls it again for the same rows.
   */
  onDeleteRows?: (rows: JobRow[]) => Promise<number | void>
  /**
   * Called for each row written to an archive file; a value other than undefined is written in
   * the line as `result_inline` (a stored result, so the archive keeps it once the store is emptied).
   */
  inlineResult?: (row: JobRow) => Promise<unknown>
}

export interface ArchiveOptions extends LifecycleHooks {
  /** Terminal jobs whose `updated_at` is before this are archived. */
  cutoffMs: number
  /** The directory of the archive files. */
  dir: string
  /** Rows per batch and file (default 200). */
  batchSize?: number
  now?: () => number
  onProgress?: (event: ArchiveEvent) => void
  /** Stops the run between batches (the service closing); what is done stays done. */
  signal?: AbortSignal
  /** Test hooks: a throw in either leaves the batch for the next run to finish. */
  faults?: {
    /** Half-way through writing a batch's file. */
    midWrite?: (batch: { fromId: number; toId: number }) => Promise<void> | void
    /** After the batch's file is durable and recorded `written`, before its rows are deleted. */
    afterWritten?: (batch: { fromId: number; toId: number }) => Promise<void> | void
  }
}

export type ArchiveEvent =
  | { kind: 'resumed'; file: string; state: 'writing' | 'written' }
  | { kind: 'batch'; file: string; fromId: number; toId: number; archived: number; changedMeanwhile: number }

export interface ArchiveReport {
  archived: number
  files: string[]
  /** Rows that changed (an admin retry) or went (an erase) between the file's write and the delete: kept out of the file. */
  changedMeanwhile: number
  /** Batches an earlier, interrupted run left and this one finished. */
  resumed: number
}

export const DEFAULT_ARCHIVE_BATCH = 200
/** A run on one database at a time: the daily plugin and `npm run archive` alike. */
export const ARCHIVE_LOCK = 'archive'
/** Held while an archive file is rewritten or its rows deleted, by the archive and by erase. */
export const ARCHIVE_FILES_LOCK = 'arcfiles'
const FILES_LOCK_WAIT_SECONDS = 5

export class ArchiveBusy extends Error {
  constructor(what: string) {
    super(what)
    this.name = 'ArchiveBusy'
  }
}

/** `30d`, `12h`, `90m`, `45s` → milliseconds; undefined when it is not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d{1,6})([dhms])$/.exec(text.trim())
  if (!m) return undefined
  const unit = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 }[m[2] as 'd' | 'h' | 'm' | 's']
  const ms = Number(m[1]) * unit
  return ms > 0 ? ms : undefined
}

function fileName(prefix: string, fromId: number, toId: number, nowMs: number): string {
  const stamp = new Date(nowMs).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  // The random part keeps names apart when a later run archives the same id range again (a row
  // that was retried meanwhile), so no file is ever overwritten.
  return `${prefix}ai_jobs-${String(fromId).padStart(10, '0')}-${String(toId).padStart(10, '0')}-${stamp}-${randomBytes(4).toString('hex')}.jsonl.gz`
}

/** A row as an archive line: every column as stored (`request_json` sealed stays sealed). */
function toLine(row: JobRow, inline: unknown): string {
  const plain: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(row)) plain[k] = typeof v === 'bigint' ? Number(v) : v
  if (inline !== undefined) plain.result_inline = inline
  return JSON.stringify(plain)
}

/**
 * `npm run archive` and the daily run (SPEC §12): terminal jobs last changed before the cut-off
 * go to gzip JSON Lines files, one per batch by id, and are then deleted. Progress is kept in
 * `{prefix}ai_archive_runs`:
 * 1. the batch (id range, file) is recorded `writing`, then its file written atomically;
 * 2. once the file is durable the batch is `written`;
 * 3. in one transaction its rows are deleted (only those whose `version` is still the one in the
 *    file) and the batch becomes `done`.
 * A run killed anywhere is finished by the next: a `writing` batch's file is removed and the
 * batch written again from the table (its rows are all still there); a `written` batch's rows are
 * deleted without writing again. So no row is lost and none is archived twice. Holds the
 * `archive` lock for the whole run: a second run at the same time is refused (ArchiveBusy).
 */
export async function runArchive(handle: DatabaseHandle, options: ArchiveOptions): Promise<ArchiveReport> {
  const held = await withNamedLock(handle, ARCHIVE_LOCK, 0, () => archiveLocked(handle, options))
  if (!held) throw new ArchiveBusy('another archive run holds the lock on this database; try again once it ends')
  return held.value
}

async function archiveLocked(handle: DatabaseHandle, options: ArchiveOptions): Promise<ArchiveReport> {
  const now = options.now ?? Date.now
  const dir = resolve(options.dir)
  const batchSize = options.batchSize ?? DEFAULT_ARCHIVE_BATCH
  const report: ArchiveReport = { archived: 0, files: [], changedMeanwhile: 0, resumed: 0 }

  for (const batch of await unfinishedArchiveBatches(handle.db)) {
    options.onProgress?.({ kind: 'resumed', file: batch.file, state: batch.state as 'writing' | 'written' })
    report.resumed++
    await finishBatch(handle, options, batch, report, now)
  }

  const maxId = await highestIdCreatedBefore(handle.db, options.cutoffMs)
  for (let after = 0; after < maxId && !options.signal?.aborted;) {
    const rows = await listArchivable(handle.db, after, maxId, options.cutoffMs, batchSize)
    if (rows.length === 0) break
    const fromId = Number(rows[0]!.id)
    const toId = Number(rows[rows.length - 1]!.id)
    const file = join(dir, fileName(handle.prefix, fromId, toId, now()))
    const id = await insertArchiveBatch(handle.db, { fromId, toId, file, cutoffMs: options.cutoffMs, nowMs: now() })
    await writeBatch(handle, options, { id, from_id: fromId, to_id: toId, file, state: 'writing', cutoff_at: '' }, rows, now)
    await finishBatch(handle, options, { id, from_id: fromId, to_id: toId, file, state: 'written', cutoff_at: '' }, report, now)
    after = toId
  }
  return report
}

async function writeBatch(handle: DatabaseHandle, options: ArchiveOptions, batch: ArchiveBatchRow, rows: JobRow[], now: () => number): Promise<void> {
  const lines: string[] = []
  for (const row of rows) lines.push(toLine(row, options.inlineResult ? await options.inlineResult(row) : undefined))
  const range = { fromId: Number(batch.from_id), toId: Number(batch.to_id) }
  const midWrite = options.faults?.midWrite
  await writeArchiveFile(batch.file, lines, midWrite ? { midWrite: () => midWrite(range) } : {})
  await setArchiveBatchState(handle.db, Number(batch.id), 'written', now(), lines.length)
}

/**
 * Takes a batch from where it stands to `done`. `writing`: the file may be partial, and no row of
 * it was deleted yet (deletes happen only after `written`), so it is removed and written again
 * from the rows of the range that still qualify. `written`: the file is whole; the rows it holds
 * are deleted, fenced on their version.
 */
async function finishBatch(handle: DatabaseHandle, options: ArchiveOptions, batch: ArchiveBatchRow, report: ArchiveReport, now: () => number): Promise<void> {
  const fromId = Number(batch.from_id)
  const toId = Number(batch.to_id)
  let state = batch.state
  if (state === 'written' && !(await exists(batch.file))) state = 'writing'
  if (state === 'writing') {
    await removeArchiveFile(batch.file)
    const cutoffMs = batch.cutoff_at ? fromDbTime(batch.cutoff_at) : options.cutoffMs
    const rows = await listArchivable(handle.db, fromId - 1, toId, cutoffMs, toId - fromId + 1)
    await writeBatch(handle, options, batch, rows, now)
  }
  await options.faults?.afterWritten?.({ fromId, toId })

  const inFile = new Map<number, number>()
  for (const line of await readArchiveRows(batch.file)) inFile.set(Number(line.id), Number(line.version))
  const ids = [...inFile.keys()]

  // Stored results go first (the hook reads the rows' references), for the rows that still
  // match the file; the transaction below checks again under lock.
  const current = await jobVersions(handle.db, ids)
  const matching = ids.filter((id) => current.get(id) === inFile.get(id))
  if (options.onDeleteRows && matching.length > 0) await options.onDeleteRows(await findJobsByIds(handle.db, matching))

  const outcome = await withNamedLock(handle, ARCHIVE_FILES_LOCK, FILES_LOCK_WAIT_SECONDS, () => retryOnLockConflict(() => handle.db.transaction().execute(async (trx) => {
    const locked = await lockJobVersions(trx, handle.dialect, ids)
    const keep = ids.filter((id) => locked.get(id) === inFile.get(id))
    const stale = new Set(ids.filter((id) => locked.get(id) !== inFile.get(id)))
    // A row retried (or erased) since the file was written is not archived: its line goes, so
    // a later run archives it once, as it is then.
    if (stale.size > 0) await rewriteArchiveFile(batch.file, (row) => stale.has(Number(row.id)))
    await deleteJobsById(trx, keep)
    await setArchiveBatchState(trx, Number(batch.id), 'done', now(), keep.length)
    return { archived: keep.length, stale: stale.size }
  })))
  if (!outcome) throw new ArchiveBusy('archive files are being rewritten (an erase?); the batch is finished by the next run')
  report.archived += outcome.value.archived
  report.changedMeanwhile += outcome.value.stale
  report.files.push(batch.file)
  options.onProgress?.({ kind: 'batch', file: batch.file, fromId, toId, archived: outcome.value.archived, changedMeanwhile: outcome.value.stale })
}
