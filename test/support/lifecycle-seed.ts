/** Jobs, budget rows and archive reading shared by the lifecycle tests (test/lifecycle/). */
import { randomBytes } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { DatabaseHandle } from '../../src/db/database.js'
import type { JobStatus } from '../../src/db/schema.js'
import { toDbTime } from '../../src/db/time.js'
import { sealRequest } from '../../src/jobs/request-crypto.js'
import { readArchiveRows } from '../../src/lifecycle/archive-files.js'
import { seedJob } from './job-seed.js'

const DAY = 86_400_000

export interface Seeded {
  /** Terminal and changed more than 30 days ago: the archive takes these. */
  old: Set<number>
  /** Everything else: still open, or recent. */
  kept: Set<number>
  /** id → request_json as stored. */
  stored: Map<number, string>
  /** id → user_id. */
  owner: Map<number, number>
}

/** Old terminal jobs of users 1–3, old open ones, recent finished ones; encrypted requests. */
export async function seedJobs(handle: DatabaseHandle, keyring: Parameters<typeof sealRequest>[1], nowMs: number): Promise<Seeded> {
  const seeded: Seeded = { old: new Set(), kept: new Set(), stored: new Map(), owner: new Map() }
  const statuses: JobStatus[] = ['succeeded', 'failed', 'canceled']
  const add = async (userId: number, status: JobStatus, ageDays: number, archivable: boolean, i: number) => {
    const at = nowMs - ageDays * DAY
    const key = randomBytes(32).toString('hex')
    const plain = JSON.stringify({ model: 'echo', input: `private words of user ${userId} #${i}`, params: { max_tokens: 10 }, metadata: { post_id: 100 + i } })
    const request = sealRequest(plain, keyring, key)
    const row = await seedJob(handle, at, {
      user_id: userId, owner_key: `u:${userId}`, status, idempotency_key: key, request_json: request,
      created_at: toDbTime(at - 1000), updated_at: toDbTime(at),
      ...(status === 'succeeded' ? { result_json: JSON.stringify({ output: `answer ${i}` }) } : {}),
      ...(status === 'failed' ? { error_text: 'provider refused' } : {}),
    })
    const id = Number(row.id)
    ;(archivable ? seeded.old : seeded.kept).add(id)
    seeded.stored.set(id, request)
    seeded.owner.set(id, userId)
  }
  let i = 0
  for (let n = 0; n < 21; n++, i++) await add(1 + (n % 3), statuses[n % 3]!, 40 + n, true, i)
  for (let n = 0; n < 3; n++, i++) await add(1 + n, n === 0 ? 'pending' : 'running', 45, false, i)
  for (let n = 0; n < 3; n++, i++) await add(1 + n, 'succeeded', 2, false, i)
  // Interleaved: an old finished job after recent ones, so the batches cross kept rows.
  await add(2, 'succeeded', 31, true, i++)
  return seeded
}

export async function usageSnapshot(handle: DatabaseHandle): Promise<unknown[]> {
  return handle.db.selectFrom('ai_usage').selectAll().orderBy('day').orderBy('owner_key').execute()
}

export async function seedUsage(handle: DatabaseHandle): Promise<void> {
  await handle.db.insertInto('ai_usage').values([
    { day: '2026-07-01', owner_key: 'u:1', user_id: 1, tokens: 120, jobs: 3, unmetered_calls: 0 },
    { day: '2026-07-01', owner_key: 'u:2', user_id: 2, tokens: 80, jobs: 2, unmetered_calls: 1 },
  ]).execute()
}

/** Every line of every finished archive file in `dir` (temporary files would be a defect). */
export async function archiveLines(dir: string): Promise<{ files: string[]; lines: Record<string, unknown>[] }> {
  const files = readdirSync(dir).sort()
  const lines: Record<string, unknown>[] = []
  for (const f of files) if (f.endsWith('.jsonl.gz')) lines.push(...(await readArchiveRows(join(dir, f))))
  return { files, lines }
}

