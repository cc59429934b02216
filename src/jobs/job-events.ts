import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import type { Store } from '../store/types.js'

const WAKE = 'events:wake'
const CHANGED = 'events:job'
const CANCEL = 'events:cancel'

/**
 * Job events across replicas: a create wakes every pool, a change reaches every stream and cache,
 * and a cancel reaches the replica running the job. Through Redis pub/sub when configured, in
 * process otherwise; the pools' fallback poll and lease checks keep things correct when a message
 * is lost.
 */
export class JobEvents {
  private readonly local = new EventEmitter()
  private unsubscribers: (() => Promise<void>)[] = []
  private wakeTimer: NodeJS.Timeout | undefined

  constructor(private readonly store: Store, private readonly logger: Logger, private readonly wakeCoalesceMs = 1) {
    this.local.setMaxListeners(0)
  }

  async start(onCancel: (jobId: number) => void, onWake: () => void): Promise<void> {
    const parse = (message: string): number | undefined => {
      const id = Number(message)
      return Number.isSafeInteger(id) && id > 0 ? id : undefined
    }
    this.unsubscribers.push(await this.store.subscribe(WAKE, () => onWake()))
    this.unsubscribers.push(await this.store.subscribe(CANCEL, (m) => {
      const id = parse(m)
      if (id !== undefined) onCancel(id)
    }))
    this.unsubscribers.push(await this.store.subscribe(CHANGED, (m) => {
      const id = parse(m)
      if (id !== undefined) this.local.emit('changed', id)
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

  /** Listens for changes to any job (streams filter by id). Returns the remover. */
  onChanged(listener: (jobId: number) => void): () => void {
    this.local.on('changed', listener)
    return () => this.local.off('changed', listener)
  }

  private send(channel: string, message: string): void {
    this.store.publish(channel, message).catch((err: unknown) => this.logger.warn({ err, channel }, 'could not publish a job event'))
  }
}
