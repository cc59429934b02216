import { describe, expect, it } from 'vitest'
import { manualClock } from '../../src/clock.js'
import { ProviderAborted, ProviderRateLimited, ProviderRejected, ProviderUnavailable } from '../../src/providers/errors.js'
import { backoffDelay, withRetries } from '../../src/providers/retry.js'
import { recordingSleep, sequence } from './fake-server.js'

const unavailable = () => new ProviderUnavailable('test', 'test: HTTP 503', { status: 503 })

describe('backoffDelay', () => {
  it('is full jitter: uniform in [0, min(2000, 100·2^n))', () => {
    expect(backoffDelay(0, 0)).toBe(0)
    expect(backoffDelay(0, 0.5)).toBe(50)
    expect(backoffDelay(3, 0.5)).toBe(400)
    expect(backoffDelay(10, 0.5)).toBe(1000) // capped at 2000
    for (let n = 0; n < 12; n++) {
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(n, Math.random())
        expect(d).toBeGreaterThanOrEqual(0)
        expect(d).toBeLessThan(Math.min(2000, 100 * 2 ** n))
      }
    }
  })
})

describe('withRetries', () => {
  it('retries retryable errors with jittered delays, then succeeds', async () => {
    const { sleep, delays } = recordingSleep()
    let calls = 0
    const value = await withRetries(
      async () => {
        calls++
        if (calls < 3) throw unavailable()
        return 'ok'
      },
      { clock: manualClock(0, sequence(0.3, 0.9)), signal: new AbortController().signal, sleep },
    )
    expect(value).toBe('ok')
    expect(calls).toBe(3)
    expect(delays).toEqual([30, 180])
  })

  it('gives up after maxWithinAttempt tries and throws the last error', async () => {
    const { sleep, delays } = recordingSleep()
    let calls = 0
    const run = withRetries(
      async () => {
        calls++
        throw unavailable()
      },
      { clock: manualClock(0), signal: new AbortController().signal, sleep, maxWithinAttempt: 4 },
    )
    await expect(run).rejects.toBeInstanceOf(ProviderUnavailable)
    expect(calls).toBe(4)
    expect(delays).toHaveLength(3)
  })

  it('stops at once on terminal errors and on non-provider errors', async () => {
    const { sleep, delays } = recordingSleep()
    for (const thrown of [new ProviderRejected('test', 'test: HTTP 401', { status: 401 }), new TypeError('bug')]) {
      let calls = 0
      const run = withRetries(
        async () => {
          calls++
          throw thrown
        },
        { clock: manualClock(0), signal: new AbortController().signal, sleep },
      )
      await expect(run).rejects.toBe(thrown)
      expect(calls).toBe(1)
    }
    expect(delays).toEqual([])
  })

  it('uses Retry-After as a floor and gives up when it exceeds maxRetryAfterMs', async () => {
    const { sleep, delays } = recordingSleep()
    let calls = 0
    await withRetries(
      async () => {
        if (calls++ === 0) throw new ProviderRateLimited('test', 1200)
        return 'ok'
      },
      { clock: manualClock(0, () => 0.99), signal: new AbortController().signal, sleep },
    )
    expect(delays).toEqual([1200])

    calls = 0
    const long = new ProviderRateLimited('test', 60_000)
    const run = withRetries(
      async () => {
        calls++
        throw long
      },
      { clock: manualClock(0), signal: new AbortController().signal, sleep, maxRetryAfterMs: 10_000 },
    )
    await expect(run).rejects.toBe(long)
    expect(calls).toBe(1)
    expect(delays).toEqual([1200])
  })

  it('turns an abort during the backoff wait into ProviderAborted without another try', async () => {
    const controller = new AbortController()
    let calls = 0
    const run = withRetries(
      async () => {
        calls++
        throw unavailable()
      },
      {
        clock: manualClock(0),
        signal: controller.signal,
        provider: 'test',
        sleep: (_ms, signal) =>
          new Promise((_resolve, reject) => {
            signal.addEventListener('abort', () => reject(signal.reason))
            controller.abort()
          }),
      },
    )
    await expect(run).rejects.toBeInstanceOf(ProviderAborted)
    expect(calls).toBe(1)
  })

  it('asks shouldRetry before each retry', async () => {
    const { sleep } = recordingSleep()
    let calls = 0
    const run = withRetries(
      async () => {
        calls++
        throw unavailable()
      },
      { clock: manualClock(0), signal: new AbortController().signal, sleep, shouldRetry: (_e, next) => next < 2 },
    )
    await expect(run).rejects.toBeInstanceOf(ProviderUnavailable)
    expect(calls).toBe(2)
  })
})
