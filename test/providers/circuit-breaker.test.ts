import { describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { CircuitBreaker, type BreakerState } from '../../src/providers/circuit-breaker.js'

describe('CircuitBreaker', () => {
  it('opens after N consecutive failures, refuses while open, half-opens after the cooldown, closes on success', () => {
    const clock = manualClock(1_000_000)
    const changes: BreakerState[] = []
    const breaker = new CircuitBreaker('openai http://x', { failureThreshold: 3, cooldownMs: 30_000, onStateChange: (s) => changes.push(s) })
    breaker.onFailure(clock.now())
    breaker.onFailure(clock.now())
    expect(breaker.state).toBe('closed')
    expect(breaker.canRun(clock.now())).toBe(true)
    breaker.onFailure(clock.now())
    expect(breaker.state).toBe('open')
    expect(breaker.openUntil).toBe(1_030_000)
    expect(breaker.canRun(clock.now())).toBe(false)
    expect(breaker.retryAt(clock.now())).toBe(1_030_000)

    clock.advance(29_999)
    expect(breaker.canRun(clock.now())).toBe(false)
    clock.advance(1)
    expect(breaker.canRun(clock.now())).toBe(true) // the probe
    expect(breaker.state).toBe('half-open')
    expect(breaker.canRun(clock.now())).toBe(false) // only one probe at a time
    expect(breaker.retryAt(clock.now())).toBe(clock.now() + 1_000)

    breaker.onSuccess()
    expect(breaker.state).toBe('closed')
    expect(breaker.openUntil).toBeUndefined()
    expect(breaker.consecutiveFailures).toBe(0)
    expect(changes).toEqual(['open', 'half-open', 'closed'])
  })

  it('a success in between resets the count', () => {
    const breaker = new CircuitBreaker('k', { failureThreshold: 2 })
    breaker.onFailure(0)
    breaker.onSuccess()
    breaker.onFailure(0)
    expect(breaker.state).toBe('closed')
    breaker.onFailure(0)
    expect(breaker.state).toBe('open')
  })

  it('a failed probe re-opens for another cooldown', () => {
    const clock = manualClock(0)
    const breaker = new CircuitBreaker('k', { failureThreshold: 1, cooldownMs: 10_000 })
    breaker.onFailure(clock.now())
    clock.advance(10_000)
    expect(breaker.canRun(clock.now())).toBe(true)
    breaker.onFailure(clock.now())
    expect(breaker.state).toBe('open')
    expect(breaker.openUntil).toBe(20_000)
    expect(breaker.canRun(clock.now())).toBe(false)
  })

  it('a neutral outcome (abort) frees the probe slot without changing state', () => {
    const breaker = new CircuitBreaker('k', { failureThreshold: 1, cooldownMs: 10 })
    breaker.onFailure(0)
    expect(breaker.canRun(10)).toBe(true)
    expect(breaker.canRun(10)).toBe(false)
    breaker.onNeutral()
    expect(breaker.state).toBe('half-open')
    expect(breaker.canRun(11)).toBe(true)
  })

  it('a probe that never reports frees its slot after probeTimeoutMs', () => {
    const breaker = new CircuitBreaker('k', { failureThreshold: 1, cooldownMs: 10, probeTimeoutMs: 1_000 })
    breaker.onFailure(0)
    expect(breaker.canRun(10)).toBe(true)
    expect(breaker.canRun(1_009)).toBe(false)
    expect(breaker.canRun(1_010)).toBe(true)
  })
})
