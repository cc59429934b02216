import type { ColumnType, Generated } from 'kysely'

/** Times are UTC strings `YYYY-MM-DD HH:MM:SS.mmm` in both dialects (see src/db/time.ts). */
export type DbTime = string

export type JobStatus = 'pending' | 'running' | 'succeeded' | 'failed' | 'canceled'
export const TERMINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'canceled']

/** `{prefix}ai_jobs`: the seed's columns first, then the queue columns of SPEC §3. */
export interface JobsTable {
  id: Generated<number>
  user_id: number
  status: JobStatus
  input_hash: string
  request_json: string
  result_json: string | null
  error_text: string | null
  created_at: DbTime
  updated_at: DbTime
  idempotency_key: string
  webhook_ts: DbTime | null
  owner_key: string
  model: string
  request_id: string
  attempts: ColumnType<number, number | undefined, number>
  run_after: DbTime
  lease_owner: string | null
  lease_expires_at: DbTime | null
  started_at: DbTime | null
  dispatched_at: DbTime | null
  dispatch_attempt: ColumnType<number, number | undefined, number>
  provider_ms: number | null
  worker_ms: number | null
  input_tokens: number | null
  output_tokens: number | null
  version: ColumnType<number, number | undefined, number>
  /** Tokens reserved for this job while it is open (SPEC §8); 0 once settled. */
  reserved_tokens: ColumnType<number, number | undefined, number>
  /** Tokens its provider calls cost so far, over all attempts. */
  billed_tokens: ColumnType<number, number | undefined, number>
  /**
   * The key of a result stored outside the table (SPEC §12: over RESULT_INLINE_MAX_BYTES); then
   * `result_json` is NULL. NULL for a result kept inline, or none.
   */
  result_ref: ColumnType<string | null, string | null | undefined, string | null>
  /** {@link JOB_PRIORITY}: 0 interactive, 1 bulk (claimed only when no interactive job is due; SPEC §8). */
  priority: ColumnType<number, number | undefined, number>
}

/** The `priority` column's values. */
export const JOB_PRIORITY = { interactive: 0, bulk: 1 } as const

/** `{prefix}ai_claim_locks`: rows a claim locks for the owners it takes jobs of (JOB_OWNER_CONCURRENCY across replicas). */
export interface ClaimLocksTable {
  bucket: number
}

/** `{prefix}ai_webhook_receipts`: the verified webhook deliveries that reached a job (SPEC §5). */
export interface WebhookReceiptsTable {
  /** hex sha256 of the delivery's replay key (`id:<webhook-id>` or `sha256:<body hash>`). */
  replay_key: string
  job_id: number
  created_at: DbTime
}

/** `{prefix}ai_usage`: settled tokens per UTC day and owner, for budgets (SPEC §8). */
export interface UsageTable {
  /** `YYYY-MM-DD`. */
  day: string
  owner_key: string
  user_id: number
  tokens: number
  jobs: number
  unmetered_calls: number
}

/** `{prefix}ai_archive_runs`: one row per archive batch (SPEC §12; src/lifecycle/archive.ts). */
export interface ArchiveRunsTable {
  id: Generated<number>
  /** The first and last job id the batch's file holds. */
  from_id: number
  to_id: number
  /** The file's absolute path (erase rewrites it wherever the run that wrote it put it). */
  file: string
  state: ArchiveBatchState
  rows_archived: ColumnType<number, number | undefined, number>
  cutoff_at: DbTime
  created_at: DbTime
  updated_at: DbTime
}

/** `writing`: the file may be partial; `written`: it is durable, its rows not yet deleted; `done`. */
export type ArchiveBatchState = 'writing' | 'written' | 'done'

export type EventType = 'job.succeeded' | 'job.failed' | 'job.canceled'
export type EventStatus = 'pending' | 'delivered' | 'failed'

/** `{prefix}ai_events`: the outbox of events to WordPress (SPEC §10), one row per terminal transition. */
export interface EventsTable {
  id: Generated<number>
  job_id: number
  /** The job's `version` right after the transition this row announces. */
  job_version: number
  type: EventType
  /** `msg_` + random: the same on every try of this event, new for every transition. */
  webhook_id: string
  status: EventStatus
  attempts: ColumnType<number, number | undefined, number>
  /** When the next try is due; a claim moves it past the try's timeout, so a crashed try comes due again. */
  next_attempt_at: DbTime
  /** A try that fails after this is the last: 24 h after the transition, or after an admin's resend. */
  give_up_at: DbTime
  /** The claim that owns the try in flight; every write of its outcome is fenced on it. */
  lease_token: string | null
  last_error: string | null
  /** The receiver's HTTP status on the last try; null when no answer came. */
  last_status: number | null
  created_at: DbTime
  delivered_at: DbTime | null
}

/** WordPress's own tables, read only. */
export interface UsersTable {
  ID: number
  user_login: string
  user_pass: string
  user_email: string
}
export interface UserMetaTable {
  umeta_id: number
  user_id: number
  meta_key: string | null
  meta_value: string | null
}
export interface OptionsTable {
  option_id: number
  option_name: string
  option_value: string
}
export interface SiteMetaTable {
  meta_id: number
  site_id: number
  meta_key: string | null
  meta_value: string | null
}

/**
 * Table names without the WordPress prefix; the TablePrefixPlugin in database.ts adds it to
 * every table reference, so queries are written as `db.selectFrom('ai_jobs')`.
 */
export interface Database {
  ai_jobs: JobsTable
  ai_webhook_receipts: WebhookReceiptsTable
  ai_usage: UsageTable
  ai_archive_runs: ArchiveRunsTable
  ai_events: EventsTable
  ai_claim_locks: ClaimLocksTable
  users: UsersTable
  usermeta: UserMetaTable
  options: OptionsTable
  sitemeta: SiteMetaTable
}
