import { Redis } from 'ioredis'
import type { BudgetCounter, CreateAdmission, CreateAdmissionResult, LimitDecision, Store } from './types.js'

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

// A create's dedupe lookup, rate windows and budget reservation in one round trip
// (Store.admitCreate). KEYS: the n windows, the dedupe key (a placeholder when there is none),
// then the b budget counters. ARGV: now, window, member, n, the n limits, the dedupe mode, value
// and TTL, then the amount, b and the b limits. Refusals and dedupe hits take nothing, so replays
// never count; a budget counter Redis does not hold is reported, never guessed.
const ADMIT_CREATE = `
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local member = ARGV[3]
local n = tonumber(ARGV[4])
local mode = ARGV[5 + n]
local dkey = KEYS[n + 1]
local amount = tonumber(ARGV[8 + n])
local b = tonumber(ARGV[9 + n])
if mode == 'claim' then
  local existing = redis.call('GET', dkey)
  if existing then return {'existing', existing} end
end
local counts = {}
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  local limit = tonumber(ARGV[4 + i])
  if count >= limit then
    local edge = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')
    return {'refused', i - 1, tonumber(edge[2]) + window - now}
  end
  counts[i] = count
end
for i = 1, b do
  local key = KEYS[n + 1 + i]
  local held = redis.call('HMGET', key, 'u', 'r')
  if not held[1] then return {'rebuild', i - 1} end
  local used = tonumber(held[1])
  local reserved = tonumber(held[2] or '0')
  if used + reserved + amount > tonumber(ARGV[9 + n + i]) then return {'over', i - 1, used, reserved} end
end
local out = {'admitted'}
for i = 1, n do
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], window)
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  out[#out + 1] = tonumber(ARGV[4 + i]) - counts[i] - 1
  out[#out + 1] = tonumber(first[2]) + window - now
end
if mode == 'claim' or mode == 'set' then redis.call('SET', dkey, ARGV[6 + n], 'PX', ARGV[7 + n]) end
for i = 1, b do redis.call('HINCRBY', KEYS[n + 1 + i], 'r', amount) end
return out
`

// Budget counters loaded from the database, set only where Redis holds none (another replica may
// have loaded and moved one meanwhile). KEYS: the counters; ARGV: used, reserved, TTL per key.
const INIT_BUDGETS = `
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 'u', ARGV[3 * i - 2], 'r', ARGV[3 * i - 1])
    redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
  end
end
return 1
`

// Settlements and late charges, only on counters Redis holds (a missing one is loaded afresh
// from the database, which already has them). KEYS: the counters; ARGV: used, reserved per key.
const ADJUST_BUDGETS = `
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'u', ARGV[2 * i - 1])
    redis.call('HINCRBY', KEYS[i], 'r', ARGV[2 * i])
  end
end
return 1
`

// Gives a create's hits back; drops its dedupe entry only while it still holds this create's value.
const RELEASE_CREATE = `
local n = tonumber(ARGV[2])
for i = 1, n do redis.call('ZREM', KEYS[i], ARGV[1]) end
if KEYS[n + 1] and redis.call('GET', KEYS[n + 1]) == ARGV[3] then redis.call('DEL', KEYS[n + 1]) end
return 1
`

interface ScriptedRedis extends Redis {
  consumeWindow(key: string, now: number, window: number, limit: number, member: string): Promise<number[]>
  incrementExpiring(key: string, ttlMs: number): Promise<number>
  holdSlot(key: string, now: number, member: string, limit: number, ttlMs: number): Promise<number>
  admitCreate(numKeys: number, ...args: (string | number)[]): Promise<(string | number)[]>
  releaseCreate(numKeys: number, ...args: (string | number)[]): Promise<number>
  initBudgets(numKeys: number, ...args: (string | number)[]): Promise<number>
  adjustBudgets(numKeys: number, ...args: (string | number)[]): Promise<number>
}

/** Far above what a Redis command takes (well under a millisecond), well below a client's patience. */
export const COMMAND_TIMEOUT_MS = 1_000

/** The shared store on Redis. Commands fail fast while Redis is down (no offline queue). */
export class RedisStore implements Store {
  readonly kind = 'redis' as const
  private readonly client: ScriptedRedis
  private subscriber: Redis | undefined
  private readonly handlers = new Map<string, Set<(message: string) => void>>()
  private seq = 0

  constructor(url: string, private readonly keyPrefix: string) {
    const options = {
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectTimeout: 2_000,
      // A Redis that stops answering without closing its connections (a partition, a stalled
      // proxy) must fail its commands, so creates fall back to memory instead of hanging (SPEC §6).
      commandTimeout: COMMAND_TIMEOUT_MS,
      retryStrategy: (times: number) => Math.min(2_000, 50 * 2 ** times),
      lazyConnect: false,
    }
    // Commands issued in one turn of the event loop go out as one pipeline (one write, one read),
    // which under load is most of them; scripts run by their SHA (EVALSHA), not their text.
    this.client = new Redis(url, { ...options, enableAutoPipelining: true }) as ScriptedRedis
    this.client.defineCommand('admitCreate', { lua: ADMIT_CREATE })
    this.client.defineCommand('consumeWindow', { lua: CONSUME, numberOfKeys: 1 })
    this.client.defineCommand('incrementExpiring', { lua: INCREMENT, numberOfKeys: 1 })
    this.client.defineCommand('holdSlot', { lua: HOLD_SLOT, numberOfKeys: 1 })
    this.client.defineCommand('releaseCreate', { lua: RELEASE_CREATE })
    this.client.defineCommand('initBudgets', { lua: INIT_BUDGETS })
    this.client.defineCommand('adjustBudgets', { lua: ADJUST_BUDGETS })
    // Connection errors surface on commands; the event only needs a listener so it is not fatal.
    this.client.on('error', () => {})
    // The subscriber waits for messages by design; a command timeout would cut its SUBSCRIBE off
    // while it connects, and cross-replica wake-ups and deltas with it.
    this.subscriberOptions = { ...options, enableOfflineQueue: true, maxRetriesPerRequest: null, commandTimeout: undefined }
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
    const [allowed, remaining, resetMs] = await this.client.consumeWindow(this.k(key), nowMs, windowMs, limit, member)
    return { allowed: allowed === 1, remaining: Number(remaining), resetMs: Math.max(0, Number(resetMs)) }
  }

  async increment(key: string, ttlMs: number): Promise<number> {
    return Number(await this.client.incrementExpiring(this.k(key), ttlMs))
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
    return Number(await this.client.holdSlot(this.k(key), nowMs, member, limit, ttlMs)) === 1
  }

  async releaseSlot(key: string, member: string): Promise<void> {
    await this.client.zrem(this.k(key), member)
  }

  async admitCreate(a: CreateAdmission): Promise<CreateAdmissionResult> {
    const counters = a.budgets?.counters ?? []
    const keys = [...a.windows.map((w) => this.k(w.key)), this.k(a.dedupe?.key ?? 'dedupe:none'), ...counters.map((c) => this.k(c.key))]
    const reply = await this.client.admitCreate(
      keys.length, ...keys, a.nowMs, a.windowMs, a.member, a.windows.length, ...a.windows.map((w) => w.limit),
      a.dedupe?.mode ?? '', a.dedupe?.value ?? '', a.dedupe?.ttlMs ?? 0,
      a.budgets?.amount ?? 0, counters.length, ...counters.map((c) => c.limit),
    )
    if (reply[0] === 'existing') return { kind: 'existing', value: String(reply[1]) }
    if (reply[0] === 'refused') return { kind: 'refused', index: Number(reply[1]), resetMs: Math.max(0, Number(reply[2])) }
    if (reply[0] === 'rebuild') return { kind: 'rebuild', index: Number(reply[1]) }
    if (reply[0] === 'over') return { kind: 'over-budget', index: Number(reply[1]), counter: { used: Number(reply[2]), reserved: Number(reply[3]) } }
    const windows: { remaining: number; resetMs: number }[] = []
    for (let i = 1; i < reply.length; i += 2) windows.push({ remaining: Number(reply[i]), resetMs: Math.max(0, Number(reply[i + 1])) })
    return { kind: 'admitted', windows }
  }

  async releaseCreate(windowKeys: string[], member: string, dedupe?: { key: string; value: string }): Promise<void> {
    const keys = [...windowKeys.map((k) => this.k(k)), ...(dedupe ? [this.k(dedupe.key)] : [])]
    await this.client.releaseCreate(keys.length, ...keys, member, windowKeys.length, dedupe?.value ?? '')
  }

  async initBudgets(counters: { key: string; counter: BudgetCounter; ttlMs: number }[]): Promise<void> {
    if (counters.length === 0) return
    await this.client.initBudgets(counters.length, ...counters.map((c) => this.k(c.key)), ...counters.flatMap((c) => [c.counter.used, c.counter.reserved, Math.max(1, Math.round(c.ttlMs))]))
  }

  async adjustBudgets(changes: { key: string; used: number; reserved: number }[]): Promise<void> {
    if (changes.length === 0) return
    await this.client.adjustBudgets(changes.length, ...changes.map((c) => this.k(c.key)), ...changes.flatMap((c) => [c.used, c.reserved]))
  }

  async readBudgets(keys: string[]): Promise<(BudgetCounter | undefined)[]> {
    const replies = await Promise.all(keys.map((key) => this.client.hmget(this.k(key), 'u', 'r')))
    return replies.map(([u, r]) => (u === null ? undefined : { used: Number(u), reserved: Number(r ?? 0) }))
  }

  async dropBudgets(keys: string[]): Promise<void> {
    if (keys.length > 0) await this.client.del(...keys.map((key) => this.k(key)))
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
