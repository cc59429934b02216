import type { FinishItem, Outcome } from '../db/jobs-repository.js'
import type { Settlement } from '../db/usage-repository.js'

export interface FinishBatcherOptions {
  /** Writes one batch (finishJobs); resolves to the ids written. */
  writeBatch: (items: FinishItem[]) => Promise<Set<number>>
  /**
   * Writes one job alone (finishJob). After a batch fails, each of its jobs is written this way,
   * so one row the database refuses cannot take the others' results with it.
   */
  writeOne: (item: FinishItem) => Promise<boolean>
  /** A batch is written at once when it holds this many jobs. */
  maxItems?: number
  /**
   * … or this many characters of result and error text, so a batch stays far below MariaDB's
   * `max_allowed_packet` (16 MiB by default) even at 3 bytes a character, escaped.
   */
  maxChars?: number
  /** Otherwise at the latest this long after the first job was queued. */
  delayMs?: number
}

interface Queued extends FinishItem {
  resolve: (written: boolean) => void
  reject: (err: unknown) => void
}

/**
 * Gathers the terminal outcomes of jobs finishing close together into one fenced write
 * (finishJobs): one statement per batch instead of one per job. Each caller still gets its own
 * answer: true when its row was written, false when the lease had moved on, or the error when
 * the write failed (the caller retries as it would a single write).
 */
export class FinishBatcher {
  private queue: Queued[] = []
  private queuedIds = new Set<number>()
  private chars = 0
  private timer: NodeJS.Timeout | undefined
  private readonly inFlight = new Set<Promise<void>>()
  private readonly maxItems: number
  private readonly maxChars: number
  private readonly delayMs: number

  constructor(private readonly options: FinishBatcherOptions) {
    this.maxItems = options.maxItems ?? 64
    this.maxChars = options.maxChars ?? 1_000_000
    this.delayMs = options.delayMs ?? 2
  }

  /** Queues one job's outcome; resolves once it is written (true) or refused by the fence (false). */
  finish(id: number, outcome: Outcome, settlement?: Settlement): Promise<boolean> {
    const chars = (outcome.resultJson?.length ?? 0) + (outcome.errorText?.length ?? 0)
    // A job already queued (it cannot be, but one statement must not name a row twice), or text
    // that would make the batch too large: write what is queued first.
    if (this.queuedIds.has(id) || (this.queue.length > 0 && this.chars + chars > this.maxChars)) this.flush()
    const written = new Promise<boolean>((resolve, reject) => {
      this.queue.push({ id, outcome, ...(settlement ? { settlement } : {}), resolve, reject })
    })
    this.queuedIds.add(id)
    this.chars += chars
    if (this.queue.length >= this.maxItems || this.chars >= this.maxChars) this.flush()
    // Not unref'd: a tool awaiting runOnce() must not exit with a result still queued.
    else this.timer ??= setTimeout(() => this.flush(), this.delayMs)
    return written
  }

  /** Writes whatever is queued and waits until every write under way has settled. */
  async drain(): Promise<void> {
    this.flush()
    while (this.inFlight.size > 0) await Promise.all(this.inFlight)
  }

  get pending(): number {
    return this.queue.length
  }

  private flush(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.queue.length === 0) return
    const batch = this.queue
    this.queue = []
    this.queuedIds = new Set()
    this.chars = 0
    const write = this.write(batch).finally(() => this.inFlight.delete(write))
    this.inFlight.add(write)
  }

  /** Settles every job of the batch; never throws. */
  private async write(batch: Queued[]): Promise<void> {
    let written: Set<number>
    try {
      written = await this.options.writeBatch(batch.map(({ id, outcome, settlement }) => ({ id, outcome, ...(settlement ? { settlement } : {}) })))
    } catch (err) {
      if (batch.length === 1) {
        batch[0]!.reject(err)
        return
      }
      // The batch's transaction rolled back. (Had its COMMIT gone through with only the answer
      // lost, the single writes find those rows no longer running and report them not written,
      // as a retried finishJob always has.) Each job on its own now: a transient error fails them
      // all again and each caller retries; a row the database refuses fails only its own job.
      await Promise.all(batch.map(async (q) => {
        try {
          q.resolve(await this.options.writeOne({ id: q.id, outcome: q.outcome, ...(q.settlement ? { settlement: q.settlement } : {}) }))
        } catch (e) {
          q.reject(e)
        }
      }))
      return
    }
    for (const q of batch) q.resolve(written.has(q.id))
  }
}
