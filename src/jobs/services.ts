import type { Budgets } from '../budgets/budgets.js'
import type { Clock } from '../clock.js'
import type { Config } from '../config.js'
import type { DatabaseHandle } from '../db/database.js'
import type { Metrics } from '../metrics.js'
import type { LargeResults } from '../results/large-results.js'
import type { ResultLinks } from '../results/result-link.js'
import type { Store } from '../store/types.js'
import type { WorkerPool } from '../worker/pool.js'
import type { CreateBatcher } from './create-batcher.js'
import type { JobEvents } from './job-events.js'
import type { RequestRules } from './job-request.js'

/**
 * What the job lifecycle works with: the app's decorators under the same names, so a route hands
 * over its Fastify instance and a tool or test can hand over anything of this shape.
 */
export interface JobServices {
  config: Readonly<Config>
  clock: Clock
  db: DatabaseHandle
  createBatcher: CreateBatcher
  store: Store
  metrics: Metrics
  jobEvents: JobEvents
  pool: WorkerPool
  requestRules: RequestRules
  budgets: Budgets | undefined
  results: LargeResults
  resultLinks: ResultLinks
}
