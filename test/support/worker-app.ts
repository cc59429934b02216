import type { FastifyInstance } from 'fastify'
import { expect } from 'vitest'
import type { Clock } from '../../src/clock.js'
import type { JobRow } from '../../src/db/jobs-repository.js'
import { findJob } from '../../src/db/jobs-repository.js'

export const BASE = '/wp-json/ai/v1'

/**
 * Real time plus an offset the test moves forward: provider latencies stay real (so durations
 * are measured), while backoffs, cooldowns and leases can be skipped without sleeping.
 */
export function offsetClock(random: () => number = () => 0.5): Clock & { advance(ms: number): void } {
  let offset = 0
  return {
    now: () => Date.now() + offset,
    random,
    advance(ms: number) {
      offset += ms
    },
  }
}

/** The settings every worker test app shares: no rate limit or dedupe window getting in the way. */
export const QUIET_ENV = {
  RATE_LIMIT_MAX: '0',
  DEDUPE_WINDOW_SECONDS: '0',
  LOG_LEVEL: 'silent',
}

/** POST /jobs through inject; returns the new job's id. */
export async function createJob(app: FastifyInstance, headers: Record<string, string>, body: Record<string, unknown>): Promise<number> {
  const res = await app.inject({ method: 'POST', url: `${BASE}/jobs`, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(body) })
  expect(res.statusCode, res.body).toBe(202)
  return (res.json() as { job_id: number }).job_id
}

export async function row(app: FastifyInstance, id: number): Promise<JobRow> {
  const r = await findJob(app.db.db, id)
  if (!r) throw new Error(`job ${id} is missing`)
  return r
}

export function resultOf(r: JobRow): Record<string, any> | null {
  return r.result_json === null ? null : (JSON.parse(r.result_json) as Record<string, any>)
}

/** Polls the row until `done` says so. */
export async function waitForRow(app: FastifyInstance, id: number, done: (r: JobRow) => boolean, timeoutMs = 15_000, what = `job ${id}`): Promise<JobRow> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const r = await row(app, id)
    if (done(r)) return r
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last seen ${r.status} (attempts ${r.attempts}, error ${r.error_text})`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

export const isTerminal = (r: JobRow): boolean => r.status === 'succeeded' || r.status === 'failed' || r.status === 'canceled'
