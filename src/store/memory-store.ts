import { EventEmitter } from 'node:events'
import type { BudgetCounter, CreateAdmission, CreateAdmissionResult, LimitDecision, Store } from './types.js'

interface Entry {
  value: string
  expiresAt: number
}

/** The in-process store: right for one replica only (SPEC §2), and the fallback when Redis is down. */
export class MemoryStore implements Store {
  readonly kind = 'memory' as const
  private readonly values = new Map<string, Entry>()
  private readonly windows = new Map<string, number[]>()
  /** The create windows: hit times with the member that took them, so a hit can be given back. */
  private readonly hits = new Map<string, { at: number; member: string }[]>()
  private readonly slots = new Map<string, Map<string, number>>()
  private readonly budgets = new Map<string, BudgetCounter & { expiresAt: number }>()
  private readonly events = new EventEmitter()
  private readonly sweeper: NodeJS.Timeout

  constructor(private readonly now: () => number = Date.now) {
    this.events.setMaxListeners(0)
    this.sweeper = setInterval(() => this.sweep(), 30_000)
    this.sweeper.unref()
  }

  async consume(key: string, limit: number, windowMs: number, nowMs: number): Promise<LimitDecision> {
    const hits = (this.windows.get(key) ?? []).filter((t) => t > nowMs - windowMs)
    if (hits.length >= limit) {
      this.windows.set(key, hits)
      return { allowed: false, remaining: 0, resetMs: Math.max(0, hits[hits.length - limit]! + windowMs - nowMs) }
    }
    hits.push(nowMs)
    this.windows.set(key, hits)
    return { allowed: true, remaining: limit - hits.length, resetMs: Math.max(0, hits[0]! + windowMs - nowMs) }
  }

  async admitCreate(a: CreateAdmission): Promise<CreateAdmissionResult> {
    if (a.dedupe?.mode === 'claim') {
      const existing = this.live(a.dedupe.key)
      if (existing) return { kind: 'existing', value: existing.value }
    }
    const budgets = a.budgets?.counters.map((c) => this.liveBudget(c.key)) ?? []
    for (const [index, c] of (a.budgets?.counters ?? []).entries()) {
      const held = budgets[index]
      if (!held) return { kind: 'rebuild', index }
      if (held.used + held.reserved + a.budgets!.amount > c.limit) return { kind: 'over-budget', index, counter: { used: held.used, reserved: held.reserved } }
    }
    const windows: { remaining: number; resetMs: number }[] = []
    const live = a.windows.map((w) => {
      const hits = (this.hits.get(w.key) ?? []).filter((h) => h.at > a.nowMs - a.windowMs)
      this.hits.set(w.key, hits)
      return hits
    })
    for (const [index, w] of a.windows.entries()) {
      const hits = live[index]!
      if (hits.length >= w.limit) return { kind: 'refused', index, resetMs: Math.max(0, hits[hits.length - w.limit]!.at + a.windowMs - a.nowMs) }
    }
    for (const [index, w] of a.windows.entries()) {
      const hits = live[index]!
      hits.push({ at: a.nowMs, member: a.member })
      windows.push({ remaining: w.limit - hits.length, resetMs: Math.max(0, hits[0]!.at + a.windowMs - a.nowMs) })
    }
    if (a.dedupe) this.values.set(a.dedupe.key, { value: a.dedupe.value, expiresAt: this.now() + a.dedupe.ttlMs })
    for (const held of budgets) held!.reserved += a.budgets!.amount
    return { kind: 'admitted', windows }
  }

  async releaseCreate(windowKeys: string[], member: string, dedupe?: { key: string; value: string }): Promise<void> {
    for (const key of windowKeys) {
      const hits = this.hits.get(key)
      if (hits) this.hits.set(key, hits.filter((h) => h.member !== member))
    }
    if (dedupe && this.live(dedupe.key)?.value === dedupe.value) this.values.delete(dedupe.key)
  }

  async initBudgets(counters: { key: string; counter: BudgetCounter; ttlMs: number }[]): Promise<void> {
    for (const c of counters) {
      if (!this.liveBudget(c.key)) this.budgets.set(c.key, { ...c.counter, expiresAt: this.now() + c.ttlMs })
    }
  }

  async adjustBudgets(changes: { key: string; used: number; reserved: number }[]): Promise<void> {
    for (const change of changes) {
      const held = this.liveBudget(change.key)
      if (!held) continue
      held.used += change.used
      held.reserved += change.reserved
    }
  }

  async readBudgets(keys: string[]): Promise<(BudgetCounter | undefined)[]> {
    return keys.map((key) => {
      const held = this.liveBudget(key)
      return held && { used: held.used, reserved: held.reserved }
    })
  }

  async dropBudgets(keys: string[]): Promise<void> {
    for (const key of keys) this.budgets.delete(key)
  }

  private liveBudget(key: string): (BudgetCounter & { expiresAt: number }) | undefined {
    const held = this.budgets.get(key)
    if (held && held.expiresAt <= this.now()) {
      this.budgets.delete(key)
      return undefined
    }
    return held
  }

  async increment(key: string, ttlMs: number): Promise<number> {
    const entry = this.live(key)
    const next = (entry ? Number(entry.value) : 0) + 1
    this.values.set(key, { value: String(next), expiresAt: entry ? entry.expiresAt : this.now() + ttlMs })
    return next
  }

  async get(key: string): Promise<string | null> {
    return this.live(key)?.value ?? null
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    this.values.set(key, { value, expiresAt: this.now() + ttlMs })
  }

  async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
    if (this.live(key)) return false
    this.values.set(key, { value, expiresAt: this.now() + ttlMs })
    return true
  }

  async del(key: string): Promise<void> {
    this.values.delete(key)
  }

  async holdSlot(key: string, member: string, limit: number, ttlMs: number, nowMs: number): Promise<boolean> {
    let held = this.slots.get(key)
    if (!held) {
      held = new Map()
      this.slots.set(key, held)
    }
    for (const [m, until] of held) if (until <= nowMs) held.delete(m)
    if (!held.has(member) && held.size >= limit) return false
    held.set(member, nowMs + ttlMs)
    return true
  }

  async releaseSlot(key: string, member: string): Promise<void> {
    const held = this.slots.get(key)
    held?.delete(member)
    if (held?.size === 0) this.slots.delete(key)
  }

  async publish(channel: string, message: string): Promise<void> {
    this.events.emit(channel, message)
  }

  async subscribe(channel: string, handler: (message: string) => void): Promise<() => Promise<void>> {
    this.events.on(channel, handler)
    return async () => {
      this.events.off(channel, handler)
    }
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper)
    this.events.removeAllListeners()
  }

  private live(key: string): Entry | undefined {
    const entry = this.values.get(key)
    if (!entry) return undefined
    if (entry.expiresAt <= this.now()) {
      this.values.delete(key)
      return undefined
    }
    return entry
  }

  private sweep(): void {
    const now = this.now()
    for (const [k, e] of this.values) if (e.expiresAt <= now) this.values.delete(k)
    for (const [k, held] of this.budgets) if (held.expiresAt <= now) this.budgets.delete(k)
    for (const [k, held] of this.slots) {
      for (const [m, until] of held) if (until <= now) held.delete(m)
      if (held.size === 0) this.slots.delete(k)
    }
    for (const [k, hits] of this.hits) {
      if (hits.length === 0 || hits[hits.length - 1]!.at < now - 86_400_000 * 30) this.hits.delete(k)
    }
    for (const [k, hits] of this.windows) {
      // Windows are at most a day in practice; drop keys idle longer than that.
      if (hits.length === 0 || hits[hits.length - 1]! < now - 86_400_000) this.windows.delete(k)
    }
  }
}
