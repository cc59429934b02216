import { BlockList, isIPv4, isIPv6 } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { completeFromWebhook, findJob, type JobRow } from '../db/jobs-repository.js'
import { TERMINAL_STATUSES } from '../db/schema.js'
import { fromDbTime } from '../db/time.js'
import { ApiError } from '../errors.js'
import { verifyWebhookSignature } from '../webhook/verify-signature.js'

const REPLAY_TTL_MS = 10 * 60_000

interface WebhookBody {
  job_id: number
  idempotency_key: string
  status: 'succeeded' | 'failed'
  result_json?: unknown
  error_text?: string
  usage?: { tokens?: number; ms?: number }
  attempt?: number
}

function bad(field: string, reason: string): ApiError {
  return new ApiError('ai_invalid_request', `${field}: ${reason}`, { details: { field, reason } })
}

const count = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0

/** The body rules of SPEC §5, checked after the signature. */
export function parseWebhookBody(raw: Buffer): WebhookBody {
  let body: unknown
  try {
    body = JSON.parse(raw.toString('utf8'))
  } catch {
    throw bad('body', 'is not valid JSON')
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw bad('body', 'must be a JSON object')
  const b = body as Record<string, unknown>
  if (!Number.isSafeInteger(b.job_id) || (b.job_id as number) < 1) throw bad('job_id', 'must be a positive integer')
  if (typeof b.idempotency_key !== 'string' || b.idempotency_key === '') throw bad('idempotency_key', 'is required')
  if (b.status !== 'succeeded' && b.status !== 'failed') throw bad('status', 'must be succeeded or failed')
  const hasResult = Object.hasOwn(b, 'result_json') && b.result_json !== undefined
  const hasError = b.error_text !== undefined && b.error_text !== null
  if (b.status === 'succeeded' && !hasResult) throw bad('result_json', 'is required when status is succeeded')
  if (b.status === 'succeeded' && hasError) throw bad('error_text', 'is only allowed when status is failed')
  if (b.status === 'failed' && (typeof b.error_text !== 'string' || b.error_text === '')) throw bad('error_text', 'is required when status is failed')
  if (b.status === 'failed' && hasResult) throw bad('result_json', 'is only allowed when status is succeeded')
  if (b.usage !== undefined) {
    const u = b.usage as Record<string, unknown> | null
    if (!u || typeof u !== 'object' || Array.isArray(u)) throw bad('usage', 'must be an object')
    if (u.tokens !== undefined && !count(u.tokens)) throw bad('usage.tokens', 'must be a whole number')
    if (u.ms !== undefined && !count(u.ms)) throw bad('usage.ms', 'must be a whole number')
  }
  if (b.attempt !== undefined && (!Number.isSafeInteger(b.attempt) || (b.attempt as number) < 1)) throw bad('attempt', 'must be a positive integer')
  return b as unknown as WebhookBody
}

export function ipAllowList(cidrs: readonly string[]): BlockList | undefined {
  if (cidrs.length === 0) return undefined
  const list = new BlockList()
  for (const entry of cidrs) {
    const [address = '', bits] = entry.split('/')
    const type = isIPv6(address) ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(address, type)
    else list.addSubnet(address, Number(bits), type)
  }
  return list
}

function allowed(list: BlockList, ip: string): boolean {
  const plain = ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip
  return list.check(plain, isIPv6(plain) ? 'ipv6' : 'ipv4')
}

/**
 * From this dispatch to its webhook. The claim that sent it set `started_at`; `dispatched_at` is
 * written once the worker's 2xx is seen, which a fast worker's webhook can beat, and an older
 * `dispatched_at` (from an earlier dispatch) must not count.
 */
function workerMsOf(row: JobRow, nowMs: number): number | null {
  const started = row.started_at ? fromDbTime(row.started_at) : undefined
  const dispatched = row.dispatched_at ? fromDbTime(row.dispatched_at) : undefined
  const from = dispatched !== undefined && (started === undefined || dispatched >= started) ? dispatched : started
  return from === undefined ? null : Math.max(0, Math.round(nowMs - from))
}

/** `POST /webhook`: results from external workers (SPEC §5). */
export async function webhookRoutes(app: FastifyInstance): Promise<void> {
  const gw = app.gateway
  const allow = ipAllowList(gw.config.webhookAllowedIps)

  // The signature covers the exact bytes, so the body is kept raw, whatever its content type.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  app.post('/webhook', { bodyLimit: gw.config.resultMaxBytes + 65_536 }, async (request, reply) => {
    if (allow && !allowed(allow, request.ip)) throw new ApiError('ai_forbidden', 'This address may not deliver webhooks.')
    const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0)
    const verdict = verifyWebhookSignature({ rawBody: raw, headers: request.headers, secrets: gw.config.webhookSecrets, nowMs: gw.clock.now() })
    if (!verdict.ok) throw new ApiError('ai_invalid_signature', `Webhook signature refused (${verdict.reason}).`)

    const body = parseWebhookBody(raw)
    const row = await findJob(gw.handle.db, body.job_id)
    if (!row) throw new ApiError('ai_not_found', 'No job with that job_id.')
    if (row.idempotency_key !== body.idempotency_key) throw bad('idempotency_key', 'is not the key of that job')

    const replayKey = `webhook:seen:${verdict.replayKey}`
    if (await gw.store.get(replayKey)) return reply.code(204).send()
    if (TERMINAL_STATUSES.includes(row.status)) return reply.code(204).send()
    // A delivery for an older dispatch is acknowledged and ignored: a newer one is under way.
    if (body.attempt !== undefined && body.attempt !== Number(row.dispatch_attempt)) return reply.code(204).send()

    const now = gw.clock.now()
    let resultJson = body.status === 'succeeded' ? JSON.stringify(body.result_json) : null
    let errorText = body.status === 'failed' ? body.error_text! : null
    let status = body.status
    if (resultJson !== null && Buffer.byteLength(resultJson) > gw.config.resultMaxBytes) {
      status = 'failed'
      errorText = `the worker's result is ${Buffer.byteLength(resultJson)} bytes, over RESULT_MAX_BYTES (${gw.config.resultMaxBytes}); it was not stored`
      resultJson = null
    }
    const changed = await completeFromWebhook(gw.handle.db, row.id, body.attempt, {
      status,
      resultJson,
      errorText,
      providerMs: body.usage?.ms ?? null,
      outputTokens: body.usage?.tokens ?? null,
      workerMs: workerMsOf(row, now),
    }, now)
    // Recorded only after the commit, so a delivery that failed half-way can be sent again.
    await gw.store.set(replayKey, String(row.id), REPLAY_TTL_MS)
    if (changed) gw.events.changed(row.id)
    return reply.code(204).send()
  })
}
