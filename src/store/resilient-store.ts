import { randomBytes } from 'node:crypto'
import type { Log } from '../logger.js'
import type { MemoryStore } from './memory-store.js'
import type { BudgetCounter, CreateAdmission, CreateAdmissionResult, LimitDecision, Store } from './types.js'

/**
 * Redis first, process memory while Redis is down (SPEC §6: creation and reads go on; limits fall
 * back to per-process memory; this is logged and counted).
 */
export class ResilientStore implements Store {
  readonly kind = 'redis' as const
  private lastWarn = 0
  /**
   * Tags what this process publishes through Redis: it already heard its own messages from
   * memory, so the copy Redis echoes back is dropped (one delivery per message per process, and
   * so one database read per change for the streams that follow a job).
   */
  private readonly origin = randomBytes(6).toString('hex')

  constructor(
    private readonly redis: Store,
    private readonly memory: MemoryStore,
    private readonly logger: Log,
    private readonly onFallback: (operation: string) => void = () => {},
  ) {}

  private async either<T>(operation: string, primary: () => Promise<T>, fallback: () => Promise<T>): Promise<T> {
    try {
      return await primary()
    } catch (err) {
      this.onFallback(operation)
      const now = Date.now()
      if (now - this.lastWarn > 10_000) {
        this.lastWarn = now
        this.logger.warn({ err, operation }, 'Redis unavailable: using per-process memory until it returns')
      }
      return fallback()
    }
  }

  consume(key: string, limit: number, windowMs: number, nowMs: number): Promise<LimitDecision> {
    return this.either('consume', () => this.redis.consume(key, limit, windowMs, nowMs), () => this.memory.consume(key, limit, windowMs, nowMs))
  }
  increment(key: string, ttlMs: number): Promise<number> {
    return this.either('increment', () => this.redis.increment(key, ttlMs), () => this.memory.increment(key, ttlMs))
  }
  get(key: string): Promise<string | null> {
    return this.either('get', () => this.redis.get(key), () => this.memory.get(key))
  }
  set(key: string, value: string, ttlMs: number): Promise<void> {
    return this.either('set', () => this.redis.set(key, value, ttlMs), () => this.memory.set(key, value, ttlMs))
  }
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    return this.either('setIfAbsent', () => this.redis.setIfAbsent(key, value, ttlMs), () => this.memory.setIfAbsent(key, value, ttlMs))
  }
  del(key: string): Promise<void> {
    return this.either('del', () => this.redis.del(key), () => this.memory.del(key))
  }
  holdSlot(key: string, member: string, limit: number, ttlMs: number, nowMs: number): Promise<boolean> {
    return this.either('holdSlot', () => this.redis.holdSlot(key, member, limit, ttlMs, nowMs), () => this.memory.holdSlot(key, member, limit, ttlMs, nowMs))
  }
  releaseSlot(key: string, member: string): Promise<void> {
    return this.either('releaseSlot', () => this.redis.releaseSlot(key, member), () => this.memory.releaseSlot(key, member))
  }
  admitCreate(admission: CreateAdmission): Promise<CreateAdmissionResult> {
    // With budgets, a failure is thrown rather than answered from memory (see initBudgets).
    if (admission.budgets) return this.redis.admitCreate(admission)
    return this.either('admitCreate', () => this.redis.admitCreate(admission), () => this.memory.admitCreate(admission))
  }
  releaseCreate(windowKeys: string[], member: string, dedupe?: { key: string; value: string }): Promise<void> {
    return this.either('releaseCreate', () => this.redis.releaseCreate(windowKeys, member, dedupe), () => this.memory.releaseCreate(windowKeys, member, dedupe))
  }
  // Budget counters never fall back to this process's memory: a limit counted per process would be
  // looser across replicas. Without Redis these throw, and the caller checks budgets in the
  // database instead (slower, never looser).
  initBudgets(counters: { key: string; counter: BudgetCounter; ttlMs: number }[]): Promise<void> {
    return this.redis.initBudgets(counters)
  }
  adjustBudgets(changes: { key: string; used: number; reserved: number }[]): Promise<void> {
    return this.redis.adjustBudgets(changes)
  }
  readBudgets(keys: string[]): Promise<(BudgetCounter | undefined)[]> {
    return this.redis.readBudgets(keys)
  }
  dropBudgets(keys: string[]): Promise<void> {
    return this.redis.dropBudgets(keys)
  }
  publish(channel: string, message: string): Promise<void> {
    // Local subscribers always hear it; other replicas rely on Redis (or their fallback poll).
    void this.memory.publish(channel, message)
    return this.either('publish', () => this.redis.publish(channel, `${this.origin} ${message}`), async () => {})
  }
  async subscribe(channel: string, handler: (message: string) => void): Promise<() => Promise<void>> {
    // Local events arrive through memory; remote ones through Redis, minus this process's own.
    const offMemory = await this.memory.subscribe(channel, handler)
    const offRedis = await this.redis.subscribe(channel, (tagged) => {
      const space = tagged.indexOf(' ')
      if (space < 0 || tagged.slice(0, space) === this.origin) return
      handler(tagged.slice(space + 1))
    })
    return async () => {
      await offMemory()
      await offRedis()
    }
  }
  ping(): Promise<void> {
    return this.redis.ping()
  }
  async close(): Promise<void> {
    await this.redis.close()
    await this.memory.close()
  }
}
