import { migration as aiJobs } from './0001_ai_jobs.js'
import { migration as webhookReceipts } from './0002_webhook_receipts.js'
import { migration as budgets } from './0003_budgets.js'
import { migration as createdIndex } from './0004_created_index.js'
import { migration as fairClaims } from './0005_fair_claims.js'

/** Every migration, in the order they run. Names are recorded in `{prefix}ai_gateway_migrations`. */
export const migrations = [aiJobs, webhookReceipts, budgets, createdIndex, fairClaims]
export type { MigrationContext } from './0001_ai_jobs.js'
