import { Redis } from 'ioredis'
import type { LimitDecision, Store } from './types.js'

// Sliding window on a sorted set of hit times: drop hits older than the window, refuse at the
// limit, otherwise record this hit. One script, so replicas never race between count and add.
const CONSUME = `
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count >= limit then
  local edge = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  return {0, 0, tonumber(edge[2]) + window - now}
end
redis.call('ZADD', key, now, ARGV[4])
redis.call('PEXPIRE', key, window)
local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {1, limit - count - 1, tonumber(first[2]) + window - now}
`

const INCREMENT = `
local v = redis.call('INCR', KEYS[1])
if v == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return v
`

// Counted leases on a sorted set scored by expiry: expired members leave first; a member already
// holding a slot renews it; a new one gets a slot only below the limit.
const HOLD_SLOT = `
local key = KEYS[1]
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if not redis.call('ZSCORE', key, ARGV[2]) and redis.call('ZCARD', key) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', key, now + tonumber(ARGV[4]), ARGV[2])
redis.call('PEXPIRE', key, tonumber(ARGV[4]))
return 1
`

/** The shared store on Redis. Commands fail fast while Redis is down (no offline queue). */
export class RedisStore implements Store {
  readonly kind = 'redis' as const
  private readonly client: Redis
  private subscriber: Redis | undefined
  private readonly handlers = new Map<string, Set<(message: string) => void>>()
  private seq = 0

  constructor(url: string, private readonly keyPrefix: string) {
    const options = {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectTimeout: 2_000,
      retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** times),
      lazyConnect: false,
    }
    this.client = new Redis(url, options)
    // Connection errors surface on commands; the event only needs a listener so it is not fatal.
    this.client.on('error', () => {})
    this.subscriberOptions = { ...options, enableOfflineQueue: true, maxRetriesPerRequest: null }
    this.url = url
  }

  private readonly subscriberOptions: Record<string, unknown>
  private readonly url: string

  /**
   * Waits (at most `timeoutMs`) for the first connection. Commands fail fast instead of queueing,
   * so a store used before it is ready would fall back to memory for no reason.
   */
  async waitUntilReady(timeoutMs: number): Promise<boolean> {
    if (this.client.status === 'ready') return true
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer)
        this.client.off('ready', onReady)
        resolve(ok)
      }
      const onReady = () => done(true)
      const timer = setTimeout(() => done(false), timeoutMs)
      this.client.on('ready', onReady)
    })
  }

  private k(key: string): string {
    return this.keyPrefix + key
  }

  async consume(key: string, limit: number, windowMs: number, nowMs: number): Promise<LimitDecision> {
    const member = `${nowMs}:${process.pid}:${this.seq++}:${Math.random()}`
    const [allowed, remaining, resetMs] = (await this.client.eval(CONSUME, 1, this.k(key), nowMs, windowMs, limit, member)) as number[]
    return { allowed: allowed === 1, remaining: Number(remaining), resetMs: Math.max(0, Number(resetMs)) }
  }

  async increment(key: string, ttlMs: number): Promise<number> {
    return Number(await this.client.eval(INCREMENT, 1, this.k(key), ttlMs))
  }

  async get(key: string): Promise<string | null> {
    return this.client.get(this.k(key))
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.client.set(this.k(key), value, 'PX', ttlMs)
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    return (await this.client.set(this.k(key), value, 'PX', ttlMs, 'NX')) === 'OK'
  }

  async del(key: string): Promise<void> {
    await this.client.del(this.k(key))
  }

  async holdSlot(key: string, member: string, limit: number, ttlMs: number, nowMs: number): Promise<boolean> {
    return Number(await this.client.eval(HOLD_SLOT, 1, this.k(key), nowMs, member, limit, ttlMs)) === 1
  }

  async releaseSlot(key: string, member: string): Promise<void> {
    await this.client.zrem(this.k(key), member)
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.client.publish(this.k(channel), message)
  }

  async subscribe(channel: string, handler: (message: string) => void): Promise<() => Promise<void>> {
    const full = this.k(channel)
    if (!this.subscriber) {
      this.subscriber = new Redis(this.url, this.subscriberOptions)
      this.subscriber.on('error', () => {})
      this.subscriber.on('message', (ch: string, message: string) => {
        for (const h of this.handlers.get(ch) ?? []) h(message)
      })
    }
    let set = this.handlers.get(full)
    if (!set) {
      set = new Set()
      this.handlers.set(full, set)
      // Not awaited: with Redis down at start-up the command waits in the offline queue and runs
      // on connect (ioredis also re-subscribes after every reconnect), so the gateway starts anyway.
      this.subscriber.subscribe(full).catch(() => {})
    }
    set.add(handler)
    return async () => {
      set.delete(handler)
      if (set.size === 0) {
        this.handlers.delete(full)
        await this.subscriber?.unsubscribe(full).catch(() => {})
      }
    }
  }

  async ping(): Promise<void> {
    await this.client.ping()
  }

  async close(): Promise<void> {
    this.client.disconnect()
    this.subscriber?.disconnect()
  }
}
