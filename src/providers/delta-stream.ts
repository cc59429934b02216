/** Where an attempt's deltas go: the job's SSE clients, across replicas. */
export interface DeltaSink {
  /** `index` counts from 0 after each reset. Never called with `''`. */
  onDelta(index: number, text: string): void
  /** The text sent so far is void; the next delta starts again at index 0. */
  onReset(): void
}

/**
 * The deltas of one attempt as clients see them (SPEC §9). Each provider try streams into it; the
 * first delta of a try that follows text already sent (by an earlier try of this attempt, or by
 * an earlier claim of the job when `resetFirst` says one may have) is preceded by a reset, and
 * indexes count from 0 again. So the deltas after the last reset, joined in index order, are the
 * text of the try that answered. A try that fails before its first delta sends no reset.
 */
export class DeltaStream {
  private index = 0
  private sentThisTry = 0
  private sentInAttempt = 0
  /** Text went out that the next try must replace. */
  private stale: boolean

  constructor(private readonly sink: DeltaSink, options: { resetFirst?: boolean } = {}) {
    this.stale = options.resetFirst === true
  }

  /** Deltas sent in this attempt, by every try. */
  get sent(): number {
    return this.sentInAttempt
  }

  /** A new provider try begins. */
  beginTry(): void {
    this.sentThisTry = 0
  }

  /** The provider's text sink for the current try. */
  readonly push = (text: string): void => {
    if (text === '') return
    if (this.sentThisTry === 0 && this.stale) {
      this.sink.onReset()
      this.index = 0
    }
    this.stale = true
    this.sentThisTry++
    this.sentInAttempt++
    this.sink.onDelta(this.index++, text)
  }
}
