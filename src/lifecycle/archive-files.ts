import { constants, createReadStream } from 'node:fs'
import { mkdir, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { createGunzip, createGzip } from 'node:zlib'

/**
 * Archive files (SPEC §12): gzip JSON Lines, mode 0600, each written under a temporary name,
 * fsynced, renamed into place and its directory fsynced, so a file under its final name is always
 * whole, and survives a power cut once the rename returned.
 */

export const FILE_MODE = 0o600

/** The temporary name a file is written under before it is renamed into place. */
export function tempPathOf(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp`)
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export interface WriteHooks {
  /** Called once half the lines are in the temporary file (tests kill the write there). */
  midWrite?: () => Promise<void> | void
}

/**
 * Writes `lines` (each one JSON value, without its newline) to `path` atomically: gzip into the
 * temporary name (created 0600, whatever the umask), fsync, rename, fsync the directory.
 */
export async function writeArchiveFile(path: string, lines: readonly string[], hooks: WriteHooks = {}): Promise<void> {
  const dir = dirname(path)
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const temp = tempPathOf(path)
  await rm(temp, { force: true })
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE)
  let renamed = false
  try {
    await handle.chmod(FILE_MODE)
    const gzip = createGzip()
    const written = new Promise<void>((resolve, reject) => {
      gzip.on('data', (chunk: Buffer) => {
        gzip.pause()
        handle.write(chunk).then(() => gzip.resume(), (err: unknown) => gzip.destroy(err as Error))
      })
      gzip.on('end', resolve)
      gzip.on('error', reject)
    })
    // Writing is sequential: each chunk is on disk (in the page cache) before the next is read.
    const half = Math.floor(lines.length / 2)
    for (const [i, line] of lines.entries()) {
      if (!gzip.write(`${line}\n`)) await new Promise((r) => gzip.once('drain', r))
      if (i + 1 === half && hooks.midWrite) {
        await new Promise<void>((r) => gzip.flush(() => r()))
        await hooks.midWrite()
      }
    }
    gzip.end()
    await written
    await handle.sync()
    await handle.close()
    await rename(temp, path)
    renamed = true
    await fsyncDir(dir)
  } finally {
    if (!renamed) {
      await handle.close().catch(() => {})
    }
  }
}

/** Reads an archive file's lines (each a JSON text), in order. */
export async function* readArchiveLines(path: string): AsyncGenerator<string> {
  const lines = createInterface({ input: createReadStream(path).pipe(createGunzip()), crlfDelay: Infinity })
  for await (const line of lines) if (line !== '') yield line
}

/** Every line of a file parsed (small files: one batch). */
export async function readArchiveRows(path: string): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = []
  for await (const line of readArchiveLines(path)) rows.push(JSON.parse(line) as Record<string, unknown>)
  return rows
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}

/** Removes a file and its temporary twin, if they are there. */
export async function removeArchiveFile(path: string): Promise<void> {
  await rm(tempPathOf(path), { force: true })
  await rm(path, { force: true })
}

/**
 * Rewrites a file without the lines `drop` picks, atomically (the same temporary name, fsync and
 * rename as a new file). Returns how many lines were dropped and kept; a file that keeps every
 * line is left untouched.
 */
export async function rewriteArchiveFile(path: string, drop: (row: Record<string, unknown>) => boolean): Promise<{ dropped: number; kept: number }> {
  const keep: string[] = []
  let dropped = 0
  for await (const line of readArchiveLines(path)) {
    if (drop(JSON.parse(line) as Record<string, unknown>)) dropped++
    else keep.push(line)
  }
  // A file left without lines stays, empty: its batch's record still names it.
  if (dropped > 0) await writeArchiveFile(path, keep)
  return { dropped, kept: keep.length }
}
