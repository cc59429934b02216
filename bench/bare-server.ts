/**
 * The baseline of SPEC §7: a bare Fastify route doing one INSERT (one commit) per request into a
 * table shaped like `{prefix}ai_jobs`, on the same MariaDB, with a plain mysql2 pool, the way a
 * naive service would. No auth, no validation. The columns it writes come from BARE_INSERT_PLAN
 * (JSON, see support/database.ts), which the bench reads off the gateway's migrated table.
 */
import { createHash, randomBytes } from 'node:crypto'
import Fastify from 'fastify'
import { createPool } from 'mysql2/promise'
import type { InsertPlan } from './support/database.js'

const plan = JSON.parse(process.env.BARE_INSERT_PLAN!) as InsertPlan
const pool = createPool({ uri: process.env.DATABASE_URL!, connectionLimit: 10, timezone: 'Z' })
const app = Fastify({ logger: false })
const sql = `INSERT INTO \`${plan.table}\` (${plan.columns.map((c) => `\`${c.name}\``).join(', ')})
  VALUES (${plan.columns.map(() => '?').join(', ')})`

app.get('/healthz', async () => ({ status: 'ok' }))

app.post('/jobs', async (request, reply) => {
  const body = JSON.stringify(request.body)
  const hash = createHash('sha256').update(body).digest('hex')
  const now = new Date().toISOString().replace('T', ' ').slice(0, 23)
  const values = plan.columns.map(({ value }) => {
    switch (value.kind) {
      case 'input_hash': return hash
      case 'request_json': return body
      case 'now': return now
      case 'random_key': return randomBytes(32).toString('hex')
      case 'constant': return value.value
    }
  })
  const [result] = await pool.execute(sql, values)
  reply.code(202)
  return { job_id: (result as { insertId: number }).insertId, status: 'pending' }
})

await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
process.on('SIGTERM', () => {
  void app.close().then(() => pool.end()).then(() => process.exit(0))
})
