import type { JobRow } from '../db/jobs-repository.js'
import { parseResult } from '../jobs/job-response.js'
import type { Log } from '../logger.js'
import { resultKey, type ResultStore } from './result-store.js'

/** Where a result goes: inline in `result_json`, or stored under `result_ref`. */
export interface PlacedResult {
  resultJson: string | null
  resultRef: string | null
}

export interface LargeResultsOptions {
  store: ResultStore
  /** RESULT_INLINE_MAX_BYTES: a result of more bytes is stored outside the table. */
  inlineMaxBytes: number
  /**
   * False without AI_PUBLIC_TOKEN_SECRET: no link could be signed for a stored result, so every
   * result stays inline (up to RESULT_MAX_BYTES, as before the store existed).
   */
  enabled: boolean
  log: Log
}

/**
 * The write side of SPEC §12's large results. A writer asks `place()` before its row update: a
 * large result is made durable in the store first and the row gets only its key. When the update
 * then changes no row (the lease moved on, the job was already finished), the writer calls
 * `discard()` so no file outlives its chance of being named.
 */
export class LargeResults {
  constructor(readonly options: LargeResultsOptions) {}

  get store(): ResultStore {
    return this.options.store
  }

  /**
   * Stores `resultJson` outside the table when it is over the inline limit; otherwise leaves it
   * inline. Should the store refuse it, the result stays inline too (up to RESULT_MAX_BYTES, as
   * without a store), logged, rather than costing the provider call or the delivery behind it.
   */
  async place(row: Pick<JobRow, 'id' | 'version'>, resultJson: string | null): Promise<PlacedResult> {
    if (resultJson === null || !this.options.enabled) return { resultJson, resultRef: null }
    const bytes = Buffer.from(resultJson, 'utf8')
    if (bytes.length <= this.options.inlineMaxBytes) return { resultJson, resultRef: null }
    const key = resultKey(Number(row.id), Number(row.version))
    try {
      await this.options.store.put(key, bytes)
    } catch (err) {
      this.options.log.warn({ job_id: Number(row.id), err }, 'result could not be stored outside the table; kept inline')
      await this.discard(key, 'its write failed')
      return { resultJson, resultRef: null }
    }
    return { resultJson: null, resultRef: key }
  }

  /**
   * After a row update that failed, it is unknown whether it was written (a COMMIT whose answer
   * was lost): the stored result is deleted only when the row, read again, does not name it.
   * When that read fails too, the file stays (an orphan is harmless; a row naming nothing is not).
   */
  async discardUnlessNamed(key: string | null, currentRef: () => Promise<string | null | undefined>, log: Record<string, unknown> = {}): Promise<void> {
    if (!key) return
    let named: string | null | undefined
    try {
      named = await currentRef()
    } catch {
      return
    }
    if (named !== key) await this.discard(key, 'the row update failed', log)
  }

  /**
   * Deletes a stored result no row names (any more): never throws, a failure is logged and leaves
   * an orphan file, which holds no one's data a row still points to.
   */
  async discard(key: string | null | undefined, why: string, log: Record<string, unknown> = {}): Promise<void> {
    if (!key) return
    try {
      await this.options.store.delete(key)
    } catch (err) {
      this.options.log.warn({ ...log, err, result_ref: key, why }, 'stored result could not be deleted')
    }
  }
}

/**
 * The parsed result of a row, whether inline (`result_json`) or stored outside (`result_ref`):
 * what events and exports carry inline. A stored result whose object is missing reads as null.
 */
export async function loadResult(store: ResultStore, row: Pick<JobRow, 'result_json' | 'result_ref'>): Promise<unknown> {
  if (row.result_ref === null || row.result_ref === undefined) return parseResult(row.result_json)
  const bytes = await store.get(row.result_ref)
  return bytes === undefined ? null : parseResult(bytes.toString('utf8'))
}
