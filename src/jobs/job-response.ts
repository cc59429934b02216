import type { JobRow } from '../db/jobs-repository.js'
import { fromDbTime, toIsoTime } from '../db/time.js'

export interface JobResponse {
  job_id: number
  status: string
  model: string
  created_at: string
  updated_at: string
  attempts: number
  result: unknown
  error: string | null
  usage: { input_tokens: number | null; output_tokens: number | null; provider_ms: number | null; worker_ms: number | null }
  request_id: string
}

/** `result_json` as the API shows it. */
export function parseResult(text: string | null): unknown {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    // A seed row or an external worker may have stored text that is not JSON; show it as is.
    return text
  }
}

/** The one shape of a job in the API (SPEC §4 "Job JSON"). */
export function toJobResponse(row: JobRow): JobResponse {
  return {
    job_id: Number(row.id),
    status: row.status,
    model: row.model,
    created_at: toIsoTime(row.created_at),
    updated_at: toIsoTime(row.updated_at),
    attempts: Number(row.attempts),
    result: parseResult(row.result_json),
    error: row.error_text,
    usage: {
      input_tokens: row.input_tokens === null ? null : Number(row.input_tokens),
      output_tokens: row.output_tokens === null ? null : Number(row.output_tokens),
      provider_ms: row.provider_ms === null ? null : Number(row.provider_ms),
      worker_ms: row.worker_ms === null ? null : Number(row.worker_ms),
    },
    request_id: row.request_id,
  }
}

/** A strong ETag from the version counter, which every change bumps (times alone can collide within a millisecond). */
export function jobEtag(row: JobRow): string {
  return `"${row.id}.${row.version}"`
}

export function createdAtMs(row: JobRow): number {
  return fromDbTime(row.created_at)
}
