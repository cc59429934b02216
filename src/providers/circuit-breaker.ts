/**
 * One breaker per provider endpoint (provider name + base URL), shared by every model that
 * reaches it. SPEC §6: it opens after repeated failures and half-opens after a cooldown; while it
 * is open, jobs wait without spending attempts (the pool reads `openUntil` / `retryAt`).
 *
 *   closed ──N consecutive retryable failures──▶ open ──cooldown──▶ half-open (one probe)
 *     ▲                                            ▲                     │
 *     └──────────────── probe succeeds ────────────┼─────────────────────┤
 *                                                  └── probe fails ──────┘
 *
 * What counts: every try that ends in a retryable `ProviderError` is a failure. A provider that
 * answered at all, even with a terminal 4xx, is reachable, so `callProvider` reports that as a
 * success; aborts say nothing about the provider and are reported with `onNeutral()`.
 * Time comes from the caller (`now`), so tests drive it with a manual clock.
 */
export type BreakerState = 'closed' | 'open' | 'half-open'

export interface CircuitBreakerOptions {
  /** Consecutive retryable failures that open the breaker. Default 5. */
  failureThreshold?: number
  /** How long it stays open before letting one probe through. Default 30 s. */
  cooldownMs?: number
  /** While the half-open probe is in flight, how long refused callers are told to wait. Default 1 s. */
  probeWaitMs?: number
  /**
   * A probe that never reports back (a bug; `callProvider` always reports) frees its slot after
   * this long. Default 5 min: longer than one attempt can take with the default HTTP timeouts.
   */
  probeTimeoutMs?: number
  /** Called on every change of state, for logs and metrics. */
  onStateChange?: (state: BreakerState, key: string) => void
}

export const BREAKER_DEFAULTS = {
  failureThreshold: 5,
  cooldownMs: 30_000,
  probeWaitMs: 1_000,
  probeTimeoutMs: 300_000,
} as const

export class CircuitBreaker {
  readonly key: string
  readonly failureThreshold: number
  readonly cooldownMs: number
  private readonly probeWaitMs: number
  private readonly probeTimeoutMs: number
  private readonly onStateChange: ((state: BreakerState, key: string) => void) | undefined
  private current: BreakerState = 'closed'
  private failures = 0
  private until: number | undefined
  private probeStartedAt: number | undefined

  constructor(key: string, options: CircuitBreakerOptions = {}) {
    this.key = key
    this.failureThreshold = Math.max(1, options.failureThreshold ?? BREAKER_DEFAULTS.failureThreshold)
    this.cooldownMs = options.cooldownMs ?? BREAKER_DEFAULTS.cooldownMs
    this.probeWaitMs = options.probeWaitMs ?? BREAKER_DEFAULTS.probeWaitMs
    this.probeTimeoutMs = options.probeTimeoutMs ?? BREAKER_DEFAULTS.probeTimeoutMs
    this.onStateChange = options.onStateChange
  }

  /** The state as of the last call. `open` becomes `half-open` only when `canRun` is asked after the cooldown. */
  get state(): BreakerState {
    return this.current
  }

  /** While open: the epoch ms at which the cooldown ends and a probe may go. Otherwise `undefined`. */
  get openUntil(): number | undefined {
    return this.current === 'open' ? this.until : undefined
  }

  get consecutiveFailures(): number {
    return this.failures
  }

  /**
   * May a call go now? In half-open this reserves the single probe slot, so a `true` must be
   * followed by `onSuccess`, `onFailure` or `onNeutral`.
   */
  canRun(now: number): boolean {
    if (this.current === 'closed') return true
    if (this.current === 'open') {
      if (this.until !== undefined && now < this.until) return false
      this.setState('half-open')
      this.probeStartedAt = now
      return true
    }
    if (this.probeStartedAt === undefined || now - this.probeStartedAt >= this.probeTimeoutMs) {
      this.probeStartedAt = now
      return true
    }
    return false
  }

  /** When a caller refused by `canRun(now)` should ask again (epoch ms). */
  retryAt(now: number): number {
    if (this.current === 'open' && this.until !== undefined && this.until > now) return this.until
    if (this.current === 'half-open') return now + this.probeWaitMs
    return now
  }

  /** The provider answered: close and forget earlier failures. */
  onSuccess(): void {
    this.failures = 0
    this.until = undefined
    this.probeStartedAt = undefined
    this.setState('closed')
  }

  /** A try ended in a retryable error. */
  onFailure(now: number): void {
    if (this.current === 'open') return // a call started before the breaker opened; already counted enough
    this.failures++
    if (this.current === 'half-open' || this.failures >= this.failureThreshold) {
      this.until = now + this.cooldownMs
      this.probeStartedAt = undefined
      this.setState('open')
    }
  }

  /** The call ended without telling us anything about the provider (e.g. aborted): free the probe slot. */
  onNeutral(): void {
    if (this.current === 'half-open') this.probeStartedAt = undefined
  }

  private setState(state: BreakerState): void {
    if (state === this.current) return
    this.current = state
    this.onStateChange?.(state, this.key)
  }
}
