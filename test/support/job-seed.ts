import { randomBytes } from 'node:crypto'
import type { DatabaseHandle } from '../../src/db/database.js'
import { findJob, insertJob, type JobRow, type NewJob } from '../../src/db/jobs-repository.js'
import { toDbTime } from '../../src/db/time.js'

/** Inserts a job row directly (no API), `pending` and due at `nowMs` unless overridden. */
export async function seedJob(handle: DatabaseHandle, nowMs: number, overrides: Partial<NewJob> = {}): Promise<JobRow> {
  const at = toDbTime(nowMs)
  const input = `seed ${randomBytes(6).toString('hex')}`
  const id = await insertJob(handle.db, {
    user_id: 1,
    owner_key: 'u:1',
    status: 'pending',
    input_hash: randomBytes(32).toString('hex'),
    request_json: JSON.stringify({ model: 'echo', input, params: {} }),
    idempotency_key: randomBytes(32).toString('hex'),
    model: 'echo',
    request_id: `seed-${id8()}`,
    created_at: at,
    updated_at: at,
    run_after: at,
    ...overrides,
  })
  return (await findJob(handle.db, id))!
}

function id8(): string {
  return randomBytes(4).toString('hex')
}

/** The row as stored now; throws when it is gone. */
export async function jobRow(handle: DatabaseHandle, id: number): Promise<JobRow> {
  const row = await findJob(handle.db, id)
  if (!row) throw new Error(`job ${id} is missing`)
  return row
}
