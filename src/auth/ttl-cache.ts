/**
 * The short read-through cache of WordPress rows, and how one authentication attempt reads
 * through it. Caches may delay a revocation, never a grant (SPEC §5): an attempt that would be
 * refused on rows some of which came from the cache is made once more with `freshReads()`, which
 * queries past the cache and puts what it read back in, so the next request sees it too.
 */

/** How one attempt reads WordPress rows, and whether any of them came from the cache. */
export interface Reads {
  /** Query past the cache (and refresh it with the answer). */
  readonly fresh: boolean
  /** Set by the cache when it answered a read from memory. */
  servedFromCache: boolean
}

/** Reads through the cache, noting whether it answered. */
export function cachedReads(): Reads {
  return { fresh: false, servedFromCache: false }
}

/** Reads past the cache. */
export function freshReads(): Reads {
  return { fresh: true, servedFromCache: false }
}

const DEFAULT_MAX_ENTRIES = 50_000

/** A small read-through cache of promises, so concurrent misses share one query. */
export class TtlCache {
  private readonly entries = new Map<string, { value: Promise<unknown>; expiresAt: number }>()
  constructor(private readonly ttlMs: number, private readonly now: () => number, private readonly maxEntries = DEFAULT_MAX_ENTRIES) {}

  get<T>(key: string, load: () => Promise<T>, reads?: Reads): Promise<T> {
    if (this.ttlMs <= 0) return load()
    const now = this.now()
    if (!reads?.fresh) {
      const hit = this.entries.get(key)
      if (hit && hit.expiresAt > now) {
        if (reads) reads.servedFromCache = true
        return hit.value as Promise<T>
      }
    }
    const value = load()
    this.entries.delete(key)
    this.entries.set(key, { value, expiresAt: now + this.ttlMs })
    // A failed query (database down) must not be served from the cache.
    value.catch(() => {
      if (this.entries.get(key)?.value === value) this.entries.delete(key)
    })
    this.evict(now)
    return value
  }

  clear(): void {
    this.entries.clear()
  }

  private evict(now: number): void {
    if (this.entries.size <= this.maxEntries) return
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key)
    while (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!)
  }
}
