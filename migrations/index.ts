import { migration as aiJobs } from './0001_ai_jobs.js'
import { migration as webhookReceipts } from './0002_webhook_receipts.js'
import { migration as budgets } from './0003_budgets.js'
import { migration as createdIndex } from './0004_created_index.js'
import { migration as fairClaims } from './0005_fair_claims.js'
import { migration as eventsOutbox } from './0006_events_outbox.js'
import { migration as resultStore } from './0007_result_store.js'
import { migration as archive } from './0008_archive.js'

/** Every migration, in the order they run. Names are recorded in `{prefix}ai_gateway_migrations`. */
export const migrations = [aiJobs, webhookReceipts, budgets, createdIndex, fairClaims, eventsOutbox, resultStore, archive]
export type { MigrationContext } from './0001_ai_jobs.js'
