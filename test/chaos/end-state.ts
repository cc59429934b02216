import { expect } from 'vitest'
import type { DatabaseHandle } from '../../src/db/database.js'
import type { JobRow } from '../../src/db/jobs-repository.js'
import { TERMINAL_STATUSES } from '../../src/db/schema.js'
import { waitFor } from '../helpers.js'
import { chatCompletion, promptOf, type Behavior } from '../support/fake-provider.js'

/**
 * The three checks every chaos test ends with:
 * 1. every accepted job (each 202 the clients got, and each 200 replay's job) is terminal;
 * 2. none ran twice: at the provider, a job's calls never overlap in time, and there are no more
 *    of them than the claims its row counts (times the tries one attempt may make);
 * 3. no row is half-written: a `succeeded` row has its result and usage, a `failed` one its
 *    error, no terminal row keeps a lease, and nothing is left `running` or `pending`.
 */

/** One provider call as the fake provider saw it, keyed by the job's stored idempotency key. */
export interface ProviderSpan {
  key: string
  /** `performance.now()` when the request arrived. */
  start: number
  /** When it was answered, or when the gateway closed it first (an abort, a timeout, a crash). */
  end: number | undefined
  /** True when a whole 2xx answer was written to the gateway. */
  answered: boolean
}

/** Waits, bounded by `timeoutMs`, until every job in `ids` is terminal; fails naming the ones that are not. */
export async function waitUntilTerminal(handle: DatabaseHandle, ids: Iterable<number>, timeoutMs: number): Promise<void> {
  const wanted = [...new Set(ids)]
  let open: JobRow[] = []
  try {
    await waitFor(async () => {
      if (wanted.length === 0) return true
      open = await handle.db.selectFrom('ai_jobs').selectAll().where('id', 'in', wanted).where('status', 'not in', [...TERMINAL_STATUSES]).execute()
      return open.length === 0 ? true : undefined
    }, timeoutMs, 'every accepted job to be terminal')
  } catch (err) {
    const shown = open.slice(0, 5).map((r) => `${r.id}: ${r.status}, attempts ${r.attempts}, lease ${r.lease_owner ?? '-'} until ${r.lease_expires_at ?? '-'}, run_after ${r.run_after}, error ${r.error_text ?? '-'}`)
    throw new Error(`${(err as Error).message}; ${open.length} still open:\n${shown.join('\n')}`)
  }
}

export interface EndStateOptions {
  /** Every job id a client was given (202s, and 200 replays). */
  accepted: Iterable<number>
  /** Every provider call. */
  spans: readonly ProviderSpan[]
  /** Tries one attempt may make (in-attempt retries); 1 when the provider never fails. */
  triesPerAttempt?: number
  /** The table holds exactly the accepted jobs (no job was created that no client was told of). */
  exact?: boolean
}

/** Checks 1–3 on the whole table; returns the rows. */
export async function checkEndState(handle: DatabaseHandle, options: EndStateOptions): Promise<JobRow[]> {
  const rows = await handle.db.selectFrom('ai_jobs').selectAll().orderBy('id').execute()
  const byId = new Map(rows.map((r) => [Number(r.id), r]))
  const accepted = [...new Set(options.accepted)]

  // 1. Every accepted job is there, and terminal.
  for (const id of accepted) {
    const row = byId.get(id)
    expect(row, `accepted job ${id} is in the table`).toBeDefined()
    expect(TERMINAL_STATUSES, `job ${id} is terminal`).toContain(row!.status)
  }
  if (options.exact) expect(rows.map((r) => Number(r.id)).sort((a, b) => a - b), 'the table holds the accepted jobs and no others').toEqual([...accepted].sort((a, b) => a - b))

  // 2. None ran twice.
  const calls = new Map<string, ProviderSpan[]>()
  for (const span of options.spans) calls.set(span.key, [...(calls.get(span.key) ?? []), span])
  const tries = options.triesPerAttempt ?? 1
  for (const r of rows) {
    const mine = (calls.get(r.idempotency_key) ?? []).sort((a, b) => a.start - b.start)
    const where = `job ${r.id} (${r.status}, attempts ${r.attempts})`
    expect(mine.length, `${where}: provider calls at most its claims × ${tries}`).toBeLessThanOrEqual(Number(r.attempts) * tries)
    if (r.status === 'succeeded') expect(mine.some((c) => c.answered), `${where}: a provider call answered it`).toBe(true)
    for (let i = 1; i < mine.length; i++) {
      const before = mine[i - 1]!
      expect(before.end !== undefined && before.end <= mine[i]!.start, `${where}: call ${i + 1} started only after call ${i} ended`).toBe(true)
    }
  }

  // 3. No half-written row.
  for (const r of rows) {
    const where = `job ${r.id} (${r.status})`
    expect(['pending', 'running'], `${where}: nothing is left open`).not.toContain(r.status)
    expect({ lease_owner: r.lease_owner, lease_expires_at: r.lease_expires_at }, `${where}: no lease kept`).toEqual({ lease_owner: null, lease_expires_at: null })
    if (r.status === 'succeeded') {
      const result = JSON.parse(r.result_json ?? 'null') as { output?: unknown } | null
      expect(typeof result?.output, `${where}: result_json holds the output`).toBe('string')
      expect([r.input_tokens, r.output_tokens, r.provider_ms, r.worker_ms].every((n) => n !== null), `${where}: usage is written`).toBe(true)
    }
    if (r.status === 'failed') expect(r.error_text, `${where}: error_text`).toMatch(/\S/)
  }
  return rows
}

/**
 * A provider (for test/support/fake-provider.ts) that answers every call with a completion after
 * `delayMs`, recording each call's span; a call the gateway closes first ends there, unanswered.
 */
export function slowCompletions(delayMs: number): { behavior: Behavior; spans: ProviderSpan[] } {
  const spans: ProviderSpan[] = []
  const behavior: Behavior = async (call) => {
    const span: ProviderSpan = { key: call.key, start: performance.now(), end: undefined, answered: false }
    spans.push(span)
    const closedFirst = await Promise.race([
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), delayMs)),
      call.closed.then(() => true),
    ])
    span.end = performance.now()
    // The fake provider writes the answer as soon as this returns, unless the call was closed.
    span.answered = !closedFirst
    return { json: chatCompletion(`done: ${promptOf(call)}`) }
  }
  return { behavior, spans }
}
