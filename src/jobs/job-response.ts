import type { JobRow } from '../db/jobs-repository.js'
import { fromDbTime, toIsoTime } from '../db/time.js'
import type { ResultLink } from '../results/result-link.js'

export interface JobResponse {
  job_id: number
  status: string
  model: string
  created_at: string
  updated_at: string
  attempts: number
  result: unknown
  /** Only for a result stored outside the table (then `result` is null): its signed download link. */
  result_url?: string
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

/**
 * The one shape of a job in the API (SPEC §4 "Job JSON"). A result stored outside the table
 * (SPEC §12) shows as `result: null` with `result_url`, the `link` made for this response
 * (`app.resultLinks.forRow(row)`, shared with the ETag so the two always agree).
 */
export function toJobResponse(row: JobRow, link?: ResultLink): JobResponse {
  return {
    job_id: Number(row.id),
    status: row.status,
    model: row.model,
    created_at: toIsoTime(row.created_at),
    updated_at: toIsoTime(row.updated_at),
    attempts: Number(row.attempts),
    result: row.result_ref !== null ? null : parseResult(row.result_json),
    ...(link ? { result_url: link.url } : {}),
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

/**
 * A strong ETag from the version counter, which every change bumps (times alone can collide
 * within a millisecond). With a result link its `exp` is part of it, so a 304 never leaves a
 * client holding an expired link: the tag changes when the link does, once an hour.
 */
export function jobEtag(row: JobRow, link?: ResultLink): string {
  return link ? `"${row.id}.${row.version}.${link.exp}"` : `"${row.id}.${row.version}"`
}

export function createdAtMs(row: JobRow): number {
  return fromDbTime(row.created_at)
}
