import type { EventRow } from '../db/events-repository.js'
import { toIsoTime } from '../db/time.js'

export interface EventResponse {
  id: number
  job_id: number
  type: EventRow['type']
  webhook_id: string
  status: EventRow['status']
  attempts: number
  /** When the next try is due; null once the event is delivered or failed. */
  next_attempt_at: string | null
  give_up_at: string
  last_status: number | null
  last_error: string | null
  created_at: string
  delivered_at: string | null
}

/** An outbox row as the admin API shows it. */
export function toEventResponse(row: EventRow): EventResponse {
  return {
    id: Number(row.id),
    job_id: Number(row.job_id),
    type: row.type,
    webhook_id: row.webhook_id,
    status: row.status,
    attempts: Number(row.attempts),
    next_attempt_at: row.status === 'pending' ? toIsoTime(row.next_attempt_at) : null,
    give_up_at: toIsoTime(row.give_up_at),
    last_status: row.last_status === null ? null : Number(row.last_status),
    last_error: row.last_error,
    created_at: toIsoTime(row.created_at),
    delivered_at: row.delivered_at === null ? null : toIsoTime(row.delivered_at),
  }
}
