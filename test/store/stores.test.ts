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

  it('admitCreate takes a hit from every window or from none, and says which one is full', async () => {
    const t0 = 1_800_000_000_000
    const admit = (member: string, at: number, ip = 'rl:ipA') => store.admitCreate({ windows: [{ key: ip, limit: 2 }, { key: 'rl:ownerA', limit: 3 }], windowMs: 10_000, nowMs: at, member })
    expect(await admit('m1', t0)).toEqual({ kind: 'admitted', windows: [{ remaining: 1, resetMs: 10_000 }, { remaining: 2, resetMs: 10_000 }] })
    expect(await admit('m2', t0 + 1000)).toMatchObject({ kind: 'admitted', windows: [{ remaining: 0 }, { remaining: 1 }] })
    // The address window is full: nothing is taken from the owner's either.
    expect(await admit('m3', t0 + 2000)).toEqual({ kind: 'refused', index: 0, resetMs: 8_000 })
    expect(await admit('m4', t0 + 2000, 'rl:ipB')).toMatchObject({ kind: 'admitted', windows: [{ remaining: 1 }, { remaining: 0 }] })
    expect(await admit('m5', t0 + 2000, 'rl:ipC')).toEqual({ kind: 'refused', index: 1, resetMs: 8_000 })
  })

  it('releaseCreate gives a create\'s hits back', async () => {
    const t0 = 1_800_000_100_000
    const admit = (member: string) => store.admitCreate({ windows: [{ key: 'rl:rel', limit: 2 }], windowMs: 10_000, nowMs: t0, member })
    expect((await admit('a')).kind).toBe('admitted')
    expect((await admit('b')).kind).toBe('admitted')
    expect((await admit('c')).kind).toBe('refused')
    await store.releaseCreate(['rl:rel'], 'a')
    expect((await admit('c')).kind).toBe('admitted')
    expect((await admit('d')).kind).toBe('refused')
  })

  it('admitCreate claims a dedupe entry, answers an existing one without taking a hit, and replaces it on `set`', async () => {
    const t0 = 1_800_000_200_000
    const dedupe = (value: string, mode: 'claim' | 'set') => ({ key: 'dedupe:u:1:h', value, ttlMs: 60_000, mode })
    const admit = (member: string, value: string, mode: 'claim' | 'set') => store.admitCreate({ windows: [{ key: 'rl:dd', limit: 5 }], windowMs: 10_000, nowMs: t0, member, dedupe: dedupe(value, mode) })
    expect((await admit('m1', 'key-1', 'claim')).kind).toBe('admitted')
    expect(await admit('m2', 'key-2', 'claim')).toEqual({ kind: 'existing', value: 'key-1' })
    expect(await admit('m3', 'key-3', 'claim')).toEqual({ kind: 'existing', value: 'key-1' })
    // Only m1 took a hit: four more fit.
    expect(await store.admitCreate({ windows: [{ key: 'rl:dd', limit: 5 }], windowMs: 10_000, nowMs: t0, member: 'probe' })).toMatchObject({ kind: 'admitted', windows: [{ remaining: 3 }] })
    expect((await admit('m4', 'key-4', 'set')).kind).toBe('admitted')
    expect(await admit('m5', 'key-5', 'claim')).toEqual({ kind: 'existing', value: 'key-4' })
    // Released with another create's value, the entry stays; with its own, it goes.
    await store.releaseCreate([], 'm5', { key: 'dedupe:u:1:h', value: 'key-1' })
    expect(await admit('m6', 'key-6', 'claim')).toEqual({ kind: 'existing', value: 'key-4' })
    await store.releaseCreate([], 'm4', { key: 'dedupe:u:1:h', value: 'key-4' })
    expect((await admit('m7', 'key-7', 'claim')).kind).toBe('admitted')
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
