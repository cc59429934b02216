import type { DatabaseHandle } from '../db/database.js'
import { insertJobs, type NewJobRow } from '../db/jobs-repository.js'

export interface CreateBatcherOptions {
  /** Writes one batch in one statement; resolves to each row's id by its idempotency key. */
  writeBatch: (rows: NewJobRow[]) => Promise<Map<string, number>>
  /** Writes one row alone, after its batch failed: only a row the database refuses fails. */
  writeOne: (row: NewJobRow) => Promise<number>
  /** At most this many batches in flight at once; the next one gathers while they commit. */
  maxInFlight?: number
  /** A batch holds at most this many rows … */
  maxRows?: number
  /** … or this many characters of request text (far below MariaDB's 16 MiB max_allowed_packet). */
  maxChars?: number
}

interface Queued {
  row: NewJobRow
  resolve: (id: number) => void
  reject: (err: unknown) => void
}

/** The error a second create with one stored key gets: the same as the database's own. */
function duplicateKeyError(): Error {
  return Object.assign(new Error('Duplicate entry for key idempotency_key'), { code: 'ER_DUP_ENTRY', errno: 1062 })
}

/**
 * Gathers the creates that arrive while earlier ones are being committed into one multi-row
 * INSERT: one statement and one commit for many jobs, which is how the create path passes a
 * route that pays one commit per request. There is no timer: a create that finds a free slot is
 * written at once (no added latency when the load is light), and under load the rows that pile up
 * behind the batches in flight go together in the next one.
 *
 * Each create is answered only once its own row is durable. Two creates with one stored key in
 * one batch are one row: the first is written, the second gets the duplicate-key error the
 * database would give, and the caller answers it as a replay. When a batch fails as a whole (one
 * bad or duplicate row aborts the statement), its rows are written one by one, so each create
 * gets its own outcome.
 */
export class CreateBatcher {
  private queue: Queued[] = []
  private inFlight = 0
  private readonly maxInFlight: number
  private readonly maxRows: number
  private readonly maxChars: number

  constructor(private readonly options: CreateBatcherOptions) {
    this.maxInFlight = options.maxInFlight ?? 2
    this.maxRows = options.maxRows ?? 200
    this.maxChars = options.maxChars ?? 4_000_000
  }

  /** Resolves to the new job's id once its row is committed, or rejects with its own error. */
  insert(row: NewJobRow): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ row, resolve, reject })
      this.pump()
    })
  }

  /** Rows waiting for a batch (for tests and metrics). */
  get pending(): number {
    return this.queue.length
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch: Queued[] = []
      let chars = 0
      while (this.queue.length > 0 && batch.length < this.maxRows) {
        const next = this.queue[0]!
        if (batch.length > 0 && chars + next.row.request_json.length > this.maxChars) break
        this.queue.shift()
        chars += next.row.request_json.length
        batch.push(next)
      }
      this.inFlight++
      void this.write(batch).finally(() => {
        this.inFlight--
        this.pump()
      })
    }
  }

  /** Settles every create of the batch; never throws. */
  private async write(batch: Queued[]): Promise<void> {
    // One stored key, one row: later creates with a key already in this batch wait for the first.
    const leaders = new Map<string, Queued>()
    const followers: Queued[] = []
    for (const q of batch) {
      if (leaders.has(q.row.idempotency_key)) followers.push(q)
      else leaders.set(q.row.idempotency_key, q)
    }
    const rows = [...leaders.values()]
    try {
      const ids = rows.length === 1 ? new Map([[rows[0]!.row.idempotency_key, await this.options.writeOne(rows[0]!.row)]]) : await this.options.writeBatch(rows.map((q) => q.row))
      for (const q of rows) {
        const id = ids.get(q.row.idempotency_key)
        if (id === undefined) q.reject(new Error('the batch insert returned no id for a row'))
        else q.resolve(id)
      }
    } catch (err) {
      if (rows.length === 1) {
        rows[0]!.reject(err)
      } else {
        // The statement wrote nothing. Each row on its own now: a duplicate key or a value the
        // database refuses fails only its own create; a transient error fails each, and each
        // caller answers it as it would a single insert.
        await Promise.all(rows.map(async (q) => {
          try {
            q.resolve(await this.options.writeOne(q.row))
          } catch (e) {
            q.reject(e)
          }
        }))
      }
    }
    for (const q of followers) q.reject(duplicateKeyError())
  }
}

/** A batcher writing to `handle`'s job table. */
export function createBatcherFor(handle: DatabaseHandle, options: Omit<CreateBatcherOptions, 'writeBatch' | 'writeOne'> = {}): CreateBatcher {
  return new CreateBatcher({
    ...options,
    writeBatch: (rows) => insertJobs(handle, rows),
    writeOne: async (row) => {
      const id = (await insertJobs(handle, [row])).get(row.idempotency_key)
      if (id === undefined) throw new Error('the insert returned no id')
      return id
    },
  })
}
