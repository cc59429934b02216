import { EventEmitter } from 'node:events'
import type { Log } from '../logger.js'
import type { Store } from '../store/types.js'

const WAKE = 'events:wake'
const CHANGED = 'events:job'
const CANCEL = 'events:cancel'
const DELTA = 'events:delta'

/** A piece of a running job's output, or the word that the pieces so far are void (SPEC §9). */
export type JobDelta = { jobId: number; index: number; text: string } | { jobId: number; reset: true }

/**
 * Job events across replicas: a create wakes every pool, a change reaches every stream, and a
 * cancel reaches the replica running the job. Through Redis pub/sub when configured, in process
 * otherwise; the pools' fallback poll and lease checks keep things correct when a message is lost.
 */
export class JobEvents {
  private readonly local = new EventEmitter()
  private unsubscribers: (() => Promise<void>)[] = []
  private wakeTimer: NodeJS.Timeout | undefined

  constructor(private readonly store: Store, private readonly logger: Log, private readonly wakeCoalesceMs = 1) {
    this.local.setMaxListeners(0)
  }

  /** Subscribes to the three channels; listeners added with onWake/onCancel/onChanged hear them. */
  async start(): Promise<void> {
    const relay = (event: 'cancel' | 'changed') => (message: string) => {
      const id = Number(message)
      if (Number.isSafeInteger(id) && id > 0) this.local.emit(event, id)
    }
    this.unsubscribers.push(await this.store.subscribe(WAKE, () => this.local.emit('wake')))
    this.unsubscribers.push(await this.store.subscribe(CANCEL, relay('cancel')))
    this.unsubscribers.push(await this.store.subscribe(CHANGED, relay('changed')))
    this.unsubscribers.push(await this.store.subscribe(DELTA, (message) => {
      const delta = parseDelta(message)
      if (delta) this.local.emit('delta', delta)
    }))
  }

  async stop(): Promise<void> {
    clearTimeout(this.wakeTimer)
    this.wakeTimer = undefined
    for (const off of this.unsubscribers) await off().catch(() => {})
    this.unsubscribers = []
    this.local.removeAllListeners()
  }

  /**
   * Wakes the other replicas' pools. Under load one message every few milliseconds covers every
   * create committed before it is sent, so wake-ups are coalesced (trailing edge, `wakeCoalesceMs`).
   */
  created(): void {
    if (this.wakeTimer) return
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined
      this.send(WAKE, '')
    }, this.wakeCoalesceMs)
  }

  changed(jobId: number): void {
    this.send(CHANGED, String(jobId))
  }

  canceled(jobId: number): void {
    this.send(CANCEL, String(jobId))
    this.send(CHANGED, String(jobId))
  }

  /** A piece of a running job's output, to every replica's streams of it. */
  delta(jobId: number, index: number, text: string): void {
    this.send(DELTA, JSON.stringify([jobId, index, text]))
  }

  /** The job's streamed text so far is void: its retry starts over. */
  reset(jobId: number): void {
    this.send(DELTA, JSON.stringify([jobId]))
  }

  /** Every delta and reset of every job (the job watcher hands them to the job's streams). */
  onDelta(listener: (delta: JobDelta) => void): () => void {
    this.local.on('delta', listener)
    return () => this.local.off('delta', listener)
  }

  /** A create somewhere asks the pools to claim. Returns the remover. */
  onWake(listener: () => void): () => void {
    return this.listen('wake', listener)
  }

  /** A job was canceled somewhere: the replica running it aborts the provider call. */
  onCancel(listener: (jobId: number) => void): () => void {
    return this.listen('cancel', listener)
  }

  /** Listens for changes to any job (streams filter by id). Returns the remover. */
  onChanged(listener: (jobId: number) => void): () => void {
    return this.listen('changed', listener)
  }

  private listen(event: string, listener: (jobId: number) => void): () => void {
    this.local.on(event, listener)
    return () => this.local.off(event, listener)
  }

  private send(channel: string, message: string): void {
    this.store.publish(channel, message).catch((err: unknown) => this.logger.warn({ err, channel }, 'could not publish a job event'))
  }
}

/** `[jobId, index, text]` for a delta, `[jobId]` for a reset; anything else is dropped. */
function parseDelta(message: string): JobDelta | undefined {
  try {
    const parsed: unknown = JSON.parse(message)
    if (!Array.isArray(parsed) || !Number.isSafeInteger(parsed[0]) || parsed[0] <= 0) return undefined
    if (parsed.length === 1) return { jobId: parsed[0], reset: true }
    if (parsed.length === 3 && Number.isSafeInteger(parsed[1]) && typeof parsed[2] === 'string') return { jobId: parsed[0], index: parsed[1], text: parsed[2] }
  } catch {
    // not ours
  }
  return undefined
}
