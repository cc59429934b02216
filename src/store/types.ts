/**
 * The shared store: Redis when `REDIS_URL` is set, process memory otherwise. It holds what
 * replicas must agree on that does not belong in MySQL: rate windows, throttles, the webhook
 * replay guard, short caches, and the events that wake pools and streams.
 */
export interface LimitDecision {
  allowed: boolean
  /** Hits left in the window after this one (0 when refused). */
  remaining: number
  /** Milliseconds until a hit leaves the window (when refused: until one more is allowed). */
  resetMs: number
}

/** What a create takes from the store, in one round trip (see `Store.admitCreate`). */
export interface CreateAdmission {
  /** Sliding windows to take one hit from, all or none (the owner's; a visitor's address). */
  windows: { key: string; limit: number }[]
  windowMs: number
  nowMs: number
  /** The hit's identity in the windows, so it can be given back (`releaseCreate`). */
  member: string
  /**
   * The dedupe index entry for this input. `claim`: set it to `value` unless an entry exists,
   * and when one does, answer it and take nothing (the create may be a replay). `set`: set it
   * whatever is there (a keyed create, or an entry found stale).
   */
  dedupe?: { key: string; value: string; ttlMs: number; mode: 'claim' | 'set' }
  /**
   * Token budget counters to reserve `amount` on, all or none (SPEC §8): each holds the tokens
   * used and reserved in one window. A counter the store does not hold is not guessed at: the
   * answer is `rebuild`, and the caller loads it from the database (`initBudgets`) and asks again.
   */
  budgets?: { amount: number; counters: { key: string; limit: number }[] }
}

/** A budget counter as kept: tokens settled (`used`) and held for jobs still open (`reserved`). */
export interface BudgetCounter {
  used: number
  reserved: number
}

export type CreateAdmissionResult =
  /** Every window took the hit (and the dedupe entry, if any, is this create's). */
  | { kind: 'admitted'; windows: { remaining: number; resetMs: number }[] }
  /** Window `index` is full: nothing was taken. */
  | { kind: 'refused'; index: number; resetMs: number }
  /** A dedupe entry exists: nothing was taken. */
  | { kind: 'existing'; value: string }
  /** Budget counter `index` is not held: load it and ask again. Nothing was taken. */
  | { kind: 'rebuild'; index: number }
  /** Budget counter `index` cannot take `amount`: nothing was taken. */
  | { kind: 'over-budget'; index: number; counter: BudgetCounter }

export interface Store {
  readonly kind: 'redis' | 'memory'
  /**
   * Sliding-window limiter: records a hit for `key` at `nowMs` when fewer than `limit` hits
   * lie in the last `windowMs`, and refuses otherwise without recording.
   */
  consume(key: string, limit: number, windowMs: number, nowMs: number): Promise<LimitDecision>
  /** Adds 1 to a counter that expires `ttlMs` after its first hit; returns the new count. */
  increment(key: string, ttlMs: number): Promise<number>
  get(key: string): Promise<string | null>
  set(key: string, value: string, ttlMs: number): Promise<void>
  /** Sets the key only when absent; true when this call set it. */
  setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean>
  del(key: string): Promise<void>
  /**
   * Holds one of at most `limit` slots of `key` for `member` until `nowMs + ttlMs` (a counted
   * lease, e.g. an open stream): true when it is held, including when `member` held it already
   * (which renews it). Slots whose time ran out are free again, so a crashed holder frees its own.
   */
  holdSlot(key: string, member: string, limit: number, ttlMs: number, nowMs: number): Promise<boolean>
  /** The dedupe lookup and every rate window of a create, atomically, in one round trip. */
  admitCreate(admission: CreateAdmission): Promise<CreateAdmissionResult>
  /**
   * Gives a create's hits back (it turned out to be a replay, or its insert failed), and drops its
   * dedupe entry if the entry still holds `dedupe.value`.
   */
  releaseCreate(windowKeys: string[], member: string, dedupe?: { key: string; value: string }): Promise<void>
  /** Sets budget counters the store does not hold yet (loaded from the database), each with its TTL. */
  initBudgets(counters: { key: string; counter: BudgetCounter; ttlMs: number }[]): Promise<void>
  /** Adds to counters the store holds; a counter it does not hold is left to be loaded again. */
  adjustBudgets(changes: { key: string; used: number; reserved: number }[]): Promise<void>
  /** The counters as held (undefined for one that is not). */
  readBudgets(keys: string[]): Promise<(BudgetCounter | undefined)[]>
  /** Forgets counters, so they are loaded from the database when next needed. */
  dropBudgets(keys: string[]): Promise<void>
  releaseSlot(key: string, member: string): Promise<void>
  publish(channel: string, message: string): Promise<void>
  /** Returns an unsubscribe function. */
  subscribe(channel: string, handler: (message: string) => void): Promise<() => Promise<void>>
  ping(): Promise<void>
  close(): Promise<void>
}
