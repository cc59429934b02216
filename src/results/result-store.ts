import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, rm, stat, unlink } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import type { Readable } from 'node:stream'

/**
 * Where results over RESULT_INLINE_MAX_BYTES live (SPEC §12): a place every replica reaches, by
 * key. Keys come from `resultKey()` (a job id, its version and random bytes), never from a
 * request; the column `result_ref` holds them.
 *
 * `put` resolves only once the bytes are durable: the row that names the key is written after it,
 * so a row never points at an object that a crash could lose. `put` over an existing key replaces
 * it whole (readers see the old bytes or the new, never a mix). `delete` of a missing key is not
 * an error.
 */
export interface ResultStore {
  put(key: string, bytes: Buffer): Promise<void>
  /** The bytes, or undefined when nothing is stored under the key. */
  get(key: string): Promise<Buffer | undefined>
  /** The bytes as a stream with their length (for Content-Length), or undefined when missing. */
  open(key: string): Promise<{ size: number; body: Readable } | undefined>
  delete(key: string): Promise<void>
}

/**
 * `<2 hex>/<job id>-<version>-<32 hex>.json`: the first part spreads the files over 256
 * directories (by job id), the random part makes a key unguessable and unique per write, so two
 * writers racing for one job never share a file.
 */
const KEY = /^[0-9a-f]{2}\/[0-9]{1,20}-[0-9]{1,20}-[0-9a-f]{32}\.json$/

/** A new key for a result of job `id` at `version`. */
export function resultKey(id: number, version: number): string {
  return `${(id % 256).toString(16).padStart(2, '0')}/${id}-${version}-${randomBytes(16).toString('hex')}.json`
}

/** True for a key `resultKey` could have made (and nothing that could leave the store's directory). */
export function isResultKey(key: string): boolean {
  return KEY.test(key)
}

function checked(key: string): string {
  if (!isResultKey(key)) throw new Error(`not a result key: ${JSON.stringify(key.slice(0, 80))}`)
  return key
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === 'ENOENT'
}

/**
 * The default store: files under one directory (a volume shared by every replica). Directories
 * are 0700 and files 0600. A write goes to a temporary file in the same directory, is fsynced,
 * renamed over the key, and the directory is fsynced, so after `put` resolves the file survives
 * a crash and a reader never sees half of it.
 */
export class DirectoryResultStore implements ResultStore {
  readonly root: string

  constructor(root: string) {
    this.root = resolve(root)
  }

  private path(key: string): string {
    return join(this.root, checked(key))
  }

  async put(key: string, bytes: Buffer): Promise<void> {
    const target = this.path(key)
    const dir = dirname(target)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const temp = join(dir, `.tmp-${randomBytes(8).toString('hex')}`)
    const file = await open(temp, 'wx', 0o600)
    try {
      await file.writeFile(bytes)
      await file.sync()
    } catch (err) {
      await file.close().catch(() => {})
      await unlink(temp).catch(() => {})
      throw err
    }
    await file.close()
    try {
      await rename(temp, target)
    } catch (err) {
      await unlink(temp).catch(() => {})
      throw err
    }
    // The rename is durable once the directory entry is.
    const handle = await open(dir, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key))
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }

  async open(key: string): Promise<{ size: number; body: Readable } | undefined> {
    const path = this.path(key)
    // Opened before the size is read, so a file replaced in between still streams whole (the
    // descriptor keeps the file it opened).
    let file
    try {
      file = await open(path, 'r')
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
    try {
      const { size } = await file.stat()
      // The stream owns the handle from here and closes it when it ends or is destroyed.
      return { size, body: file.createReadStream({ autoClose: true }) }
    } catch (err) {
      await file.close().catch(() => {})
      throw err
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true })
  }

  /** For tests and tools: whether a key's file exists, and its mode. */
  async statKey(key: string): Promise<{ mode: number; size: number } | undefined> {
    try {
      const s = await stat(this.path(key))
      return { mode: s.mode & 0o777, size: s.size }
    } catch (err) {
      if (isMissing(err)) return undefined
      throw err
    }
  }
}

/**
 * Deletes the stored results named by `keys` (the `result_ref` values of the rows being archived,
 * erased or replaced). Null, undefined and repeated keys are skipped; a key already gone is not an
 * error. Every key is tried even when one fails; the failures are thrown together afterwards, so a
 * caller can keep the rows whose files may still exist and run again.
 */
export async function deleteStoredResults(store: ResultStore, keys: Iterable<string | null | undefined>): Promise<void> {
  const unique = [...new Set([...keys].filter((k): k is string => typeof k === 'string' && k !== ''))]
  const failures: unknown[] = []
  for (const key of unique) {
    try {
      await store.delete(key)
    } catch (err) {
      failures.push(err)
    }
  }
  if (failures.length === 1) throw failures[0]
  if (failures.length > 1) throw new AggregateError(failures, `${failures.length} of ${unique.length} stored results could not be deleted`)
}
