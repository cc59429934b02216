/**
 * The baseline of SPEC §7: a bare Fastify route doing one INSERT into a table shaped like
 * `{prefix}ai_jobs`, on the same MariaDB, with a plain mysql2 pool. No auth, no validation.
 */
import { createHash, randomBytes } from 'node:crypto'
import Fastify from 'fastify'
import { createPool } from 'mysql2/promise'

const url = process.env.DATABASE_URL!
const table = `${process.env.WP_TABLE_PREFIX ?? 'wp_'}ai_jobs`
const pool = createPool({ uri: url, connectionLimit: 10, timezone: 'Z' })
const app = Fastify({ logger: false })

app.post('/jobs', async (request, reply) => {
  const body = JSON.stringify(request.body)
  const hash = createHash('sha256').update(body).digest('hex')
  const now = new Date().toISOString().replace('T', ' ').slice(0, 23)
  const [result] = await pool.execute(
    `INSERT INTO \`${table}\` (user_id, status, input_hash, request_json, created_at, updated_at, idempotency_key, owner_key, model, run_after)
     VALUES (1, 'pending', ?, ?, ?, ?, ?, 'u:1', 'echo', ?)`,
    [hash, body, now, now, randomBytes(32).toString('hex'), now],
  )
  reply.code(202)
  return { job_id: (result as { insertId: number }).insertId, status: 'pending' }
})

await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
process.on('SIGTERM', () => {
  void app.close().then(() => pool.end()).then(() => process.exit(0))
})
