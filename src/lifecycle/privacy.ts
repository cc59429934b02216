import { existsSync } from 'node:fs'
import type { DatabaseHandle } from '../db/database.js'
import { archiveFiles, deleteJobsById, firstUserJobs, listUserJobs, withNamedLock } from '../db/archive-repository.js'
import { retryOnLockConflict } from '../db/jobs-repository.js'
import type { JobRequest } from '../jobs/job-request.js'
import { toJobResponse, type JobResponse } from '../jobs/job-response.js'
import { openRequest, RequestUnreadable, type Keyring } from '../jobs/request-crypto.js'
import { rewriteArchiveFile } from './archive-files.js'
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

/** One page of a user's jobs, oldest first. `page` counts from 1. */
export async function exportUserPage(handle: DatabaseHandle, keyring: Keyring | undefined, userId: number, page: number, perPage: number, hooks: LifecycleHooks = {}): Promise<ExportPage> {
  const rows = await listUserJobs(handle.db, userId, (page - 1) * perPage, perPage + 1)
  const shown = rows.slice(0, perPage)
  const jobs: ExportedJob[] = []
  for (const row of shown) {
    const job: ExportedJob = { ...toJobResponse(row), user_id: Number(row.user_id), request: null, metadata: null }
    if (hooks.inlineResult) {
      const inline = await hooks.inlineResult(row)
      if (inline !== undefined) job.result = inline
    }
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
    jobs.push(job)
  }
  return { user_id: userId, page, per_page: perPage, done: rows.length <= perPage, jobs }
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
