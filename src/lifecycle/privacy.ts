import { existsSync } from 'node:fs'
import type { DatabaseHandle } from '../db/database.js'
import { archiveFiles, countUserJobs, deleteJobsById, firstUserJobs, listUserJobs, withNamedLock } from '../db/archive-repository.js'
import type { JobRow } from '../db/jobs-repository.js'
import { retryOnLockConflict } from '../db/jobs-repository.js'
import type { JobRequest } from '../jobs/job-request.js'
import { toJobResponse, type JobResponse } from '../jobs/job-response.js'
import { openRequest, RequestUnreadable, type Keyring } from '../jobs/request-crypto.js'
import { readArchiveLines, rewriteArchiveFile } from './archive-files.js'
import { ARCHIVE_FILES_LOCK, type LifecycleHooks } from './archive.js'

/**
 * A user's personal data in the gateway (SPEC §12): their jobs, with the request they sent
 * (opened when it is encrypted), for WordPress's personal-data exporter; and its erasure: the
 * rows, their stored results, and their lines in archive files.
 */

export interface ExportedJob extends JobResponse {
  user_id: number
  /** What the user sent: `input` or `messages`, `params`, `metadata`; null when it cannot be opened. */
  request: { input?: string; messages?: JobRequest['messages']; params: JobRequest['params']; metadata?: Record<string, unknown> } | null
  /** Why `request` is null (a missing encryption key); absent otherwise. */
  request_error?: string
  /** The job's metadata, as the companion's exporter reads it; null when none was sent. */
  metadata: Record<string, unknown> | null
}

export interface ExportPage {
  user_id: number
  page: number
  per_page: number
  /** True on the last page. */
  done: boolean
  jobs: ExportedJob[]
}

export const EXPORT_MAX_PER_PAGE = 100

/** A job as the export shows it: its JSON, the request it was made with (opened), its metadata. */
function exportedJob(row: JobRow, keyring: Keyring | undefined, inline: unknown): ExportedJob {
  const job: ExportedJob = { ...toJobResponse(row), user_id: Number(row.user_id), request: null, metadata: null }
  if (inline !== undefined) job.result = inline
  try {
    const parsed = JSON.parse(openRequest(row.request_json, keyring, row.idempotency_key)) as Partial<JobRequest>
    job.request = {
      ...(parsed.input !== undefined ? { input: parsed.input } : {}),
      ...(parsed.messages !== undefined ? { messages: parsed.messages } : {}),
      params: parsed.params ?? {},
      ...(parsed.metadata !== undefined ? { metadata: parsed.metadata } : {}),
    }
    job.metadata = parsed.metadata ?? null
  } catch (err) {
    if (!(err instanceof RequestUnreadable) && !(err instanceof SyntaxError)) throw err
    job.request_error = err instanceof RequestUnreadable ? err.message : 'request_json is not JSON'
  }
  return job
}

/**
 * The user's archived jobs from `skip` on, at most `limit`, in the order of the archive files and
 * their lines (oldest batches first). Files this host cannot see are passed over (erase counts them).
 */
async function archivedUserJobs(handle: DatabaseHandle, userId: number, skip: number, limit: number): Promise<Record<string, unknown>[]> {
  const found: Record<string, unknown>[] = []
  let seen = 0
  for (const file of await archiveFiles(handle.db)) {
    if (!existsSync(file)) continue
    for await (const line of readArchiveLines(file)) {
      const row = JSON.parse(line) as Record<string, unknown>
      if (Number(row.user_id) !== userId) continue
      if (seen++ < skip) continue
      found.push(row)
      if (found.length >= limit) return found
    }
  }
  return found
}

/**
 * One page of a user's jobs, `page` counting from 1: first the jobs still in the table, oldest
 * first, then those moved to archive files (SPEC §12), so WordPress's exporter reaches both.
 */
export async function exportUserPage(handle: DatabaseHandle, keyring: Keyring | undefined, userId: number, page: number, perPage: number, hooks: LifecycleHooks = {}): Promise<ExportPage> {
  const start = (page - 1) * perPage
  const inTable = await countUserJobs(handle.db, userId)
  const jobs: ExportedJob[] = []
  if (start < inTable) {
    for (const row of await listUserJobs(handle.db, userId, start, perPage)) {
      jobs.push(exportedJob(row, keyring, hooks.inlineResult ? await hooks.inlineResult(row) : undefined))
    }
  }
  // One more than the page has room for says whether another page follows.
  const room = perPage - jobs.length
  const archived = start + perPage < inTable ? [] : await archivedUserJobs(handle, userId, Math.max(0, start - inTable), room + 1)
  for (const line of archived.slice(0, room)) {
    const { result_inline: inline, ...row } = line
    jobs.push(exportedJob(row as unknown as JobRow, keyring, inline))
  }
  const more = start + perPage < inTable || archived.length > room
  return { user_id: userId, page, per_page: perPage, done: !more, jobs }
}

export interface EraseOptions extends LifecycleHooks {
  /** Rows per delete (default 500): each is one short transaction. */
  batchSize?: number
  /** Rows one call erases at most before it answers `done: false` (default 2000). */
  maxRows?: number
}

export interface EraseReport {
  user_id: number
  jobs_erased: number
  results_erased: number
  archive_lines_erased: number
  /** Archive files the database lists that this host cannot see (another host's directory). */
  archive_files_missing: number
  /** False while rows remain, or while the archive files were busy: call again. */
  done: boolean
}

/**
 * Erases a user's jobs: their stored results first (the hook), then the rows with their webhook
 * receipts, in batches; once none is left, their lines in every archive file (each rewritten
 * atomically). `{prefix}ai_usage` keeps its totals (tokens spent, by owner key: no personal data).
 * One call does a bounded amount of work and says `done: false` when more remains.
 */
export async function eraseUser(handle: DatabaseHandle, userId: number, options: EraseOptions = {}): Promise<EraseReport> {
  const batchSize = options.batchSize ?? 500
  const maxRows = options.maxRows ?? 2000
  const report: EraseReport = { user_id: userId, jobs_erased: 0, results_erased: 0, archive_lines_erased: 0, archive_files_missing: 0, done: false }
  while (report.jobs_erased < maxRows) {
    const rows = await firstUserJobs(handle.db, userId, Math.min(batchSize, maxRows - report.jobs_erased))
    if (rows.length === 0) break
    if (options.onDeleteRows) report.results_erased += Number((await options.onDeleteRows(rows)) ?? 0)
    report.jobs_erased += await retryOnLockConflict(() => handle.db.transaction().execute((trx) => deleteJobsById(trx, rows.map((r) => Number(r.id)))))
  }
  if ((await firstUserJobs(handle.db, userId, 1)).length > 0) return report

  const files = await withNamedLock(handle, ARCHIVE_FILES_LOCK, 5, async () => {
    let lines = 0
    let missing = 0
    for (const file of await archiveFiles(handle.db)) {
      if (!existsSync(file)) {
        missing++
        continue
      }
      lines += (await rewriteArchiveFile(file, (row) => Number(row.user_id) === userId)).dropped
    }
    return { lines, missing }
  })
  if (!files) return report
  report.archive_lines_erased = files.value.lines
  report.archive_files_missing = files.value.missing
  report.done = true
  return report
}
