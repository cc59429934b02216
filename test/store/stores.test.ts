import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MemoryStore } from '../../src/store/memory-store.js'
import { RedisStore } from '../../src/store/redis-store.js'
import type { Store } from '../../src/store/types.js'
import { REDIS_URL, waitFor } from '../helpers.js'

const stores: [string, () => Store][] = [
  ['memory', () => new MemoryStore()],
  ['redis', () => new RedisStore(REDIS_URL, `gwtest:${randomBytes(4).toString('hex')}:`)],
]

describe.each(stores)('%s store', (_name, make) => {
  let store: Store
  beforeAll(async () => {
    store = make()
    if (store instanceof RedisStore) expect(await store.waitUntilReady(5_000)).toBe(true)
  })
  afterAll(async () => {
    await store.close()
  })

  it('sliding window: allows `limit` hits in any window, refuses the next without recording it', async () => {
    const t0 = 1_800_000_000_000
    const results = []
    for (let i = 0; i < 3; i++) results.push(await store.consume('rl:a', 3, 10_000, t0 + i * 1000))
    expect(results.map((r) => [r.allowed, r.remaining])).toEqual([[true, 2], [true, 1], [true, 0]])
    const refused = await store.consume('rl:a', 3, 10_000, t0 + 5000)
    expect(refused.allowed).toBe(false)
    // The oldest hit (t0) leaves the window at t0 + 10 s: 5 s from now.
    expect(refused.resetMs).toBe(5000)
    // Sliding, not fixed: at t0 + 10.001 s exactly one slot is free again.
    expect((await store.consume('rl:a', 3, 10_000, t0 + 10_001)).allowed).toBe(true)
    expect((await store.consume('rl:a', 3, 10_000, t0 + 10_002)).allowed).toBe(false)
    // Keys are separate.
    expect((await store.consume('rl:b', 3, 10_000, t0 + 5000)).allowed).toBe(true)
  })

  it('increment counts within a TTL that starts at the first hit', async () => {
    expect(await store.increment('cnt', 60_000)).toBe(1)
    expect(await store.increment('cnt', 60_000)).toBe(2)
    expect(await store.increment('other', 60_000)).toBe(1)
  })

  it('setIfAbsent is true once, and get/set/del round-trip', async () => {
    expect(await store.setIfAbsent('guard', 'x', 60_000)).toBe(true)
    expect(await store.setIfAbsent('guard', 'y', 60_000)).toBe(false)
    expect(await store.get('guard')).toBe('x')
    await store.set('k', 'v', 60_000)
    expect(await store.get('k')).toBe('v')
    await store.del('k')
    expect(await store.get('k')).toBeNull()
  })

  it('values expire', async () => {
    await store.set('short', 'v', 50)
    await waitFor(async () => ((await store.get('short')) === null ? true : undefined), 5_000, 'expiry')
  })

  it('publish reaches subscribers of the channel only, and unsubscribe stops delivery', async () => {
    const got: string[] = []
    const off = await store.subscribe('chan', (m) => got.push(m))
    const other: string[] = []
    const offOther = await store.subscribe('chan2', (m) => other.push(m))
    // Redis subscriptions are set up in the background; publish until one arrives.
    await waitFor(async () => {
      await store.publish('chan', 'hello')
      return got.length > 0 ? true : undefined
    }, 5_000, 'a published message')
    expect(got[0]).toBe('hello')
    expect(other).toEqual([])
    await off()
    await offOther()
    const before = got.length
    await store.publish('chan', 'after')
    await new Promise((r) => setTimeout(r, 200))
    expect(got.length).toBe(before)
  })
})
