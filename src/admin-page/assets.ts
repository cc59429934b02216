import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/**
 * The page's static files, beside this module in both layouts: src/admin-page/static/ when run
 * from source (tsx), dist/src/admin-page/static/ when run from the build, which copies them
 * there (`npm run build`; tsc itself copies nothing but TypeScript output).
 */
export const STATIC_DIR = new URL('./static/', import.meta.url)

export interface StaticAsset {
  /** The file name, which is also its route's last segment. */
  name: string
  contentType: string
  body: Buffer
  /** A short content hash: the `?v=` of the URL the page links, and the ETag. */
  hash: string
  etag: string
}

/** Reads one static file once, at start-up. A missing file stops the start, naming where it was looked for. */
export function loadAsset(name: string, contentType: string, dir: URL = STATIC_DIR): StaticAsset {
  let body: Buffer
  try {
    body = readFileSync(new URL(name, dir))
  } catch (err) {
    throw new Error(`admin page: ${name} is missing from ${fileURLToPath(dir)} (npm run build copies src/admin-page/static/ into dist)`, { cause: err })
  }
  const hash = createHash('sha256').update(body).digest('base64url').slice(0, 16)
  return { name, contentType, body, hash, etag: `"${hash}"` }
}
