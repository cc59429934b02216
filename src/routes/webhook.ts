import { BlockList, isIPv4, isIPv6 } from 'node:net'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import Type from 'typebox'
import { ApiError } from '../errors.js'
import { completeFromWebhook } from '../jobs/complete-from-webhook.js'
import { MAX_JSON_DEPTH, parseJsonBody } from '../plugins/http.js'
import { errorResponses } from '../schemas/common.js'
import { WebhookBody } from '../schemas/webhook.js'
import { verifyWebhookSignature, type WebhookVerification } from '../webhook/verify-signature.js'

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

const verdicts = new WeakMap<FastifyRequest, WebhookVerification & { ok: true }>()

/**
 * `POST /webhook`: results from external workers (SPEC §5). The signature is checked on the
 * exact bytes, before anything else (403); then the body's schema (400); the rest is in
 * jobs/complete-from-webhook.ts.
 */
export async function webhookRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const allow = ipAllowList(app.config.webhookAllowedIps)
  const verify = (request: FastifyRequest, raw: Buffer): void => {
    const verdict = verifyWebhookSignature({ rawBody: raw, headers: request.headers, secrets: app.config.webhookSecrets, nowMs: app.clock.now() })
    app.metrics.webhookVerifications.inc({ outcome: verdict.ok ? 'ok' : verdict.reason })
    if (!verdict.ok) throw new ApiError('ai_invalid_signature', `Webhook signature refused (${verdict.reason}).`)
    verdicts.set(request, verdict)
  }

  // The signature covers the exact bytes, so the body is read raw whatever its content type,
  // verified, and only then parsed (depth-bounded, like every JSON body).
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
    try {
      verify(request, body as Buffer)
      done(null, parseJsonBody((body as Buffer).toString('utf8'), MAX_JSON_DEPTH))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  app.post('/webhook', {
    config: { auth: 'webhook' },
    bodyLimit: app.config.resultMaxBytes + 65_536,
    onRequest: async (request) => {
      if (allow && !allowed(allow, request.ip)) throw new ApiError('ai_forbidden', 'This address may not deliver webhooks.')
    },
    // A delivery without a body never reaches the parser: its signature is checked here, still before the schema.
    preValidation: async (request) => {
      if (!verdicts.has(request)) verify(request, Buffer.alloc(0))
    },
    schema: {
      summary: 'Deliver an external worker\'s result',
      description: 'Signed with `X-AI-Signature` + `X-AI-Timestamp` or Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), with an `AI_WEBHOOK_SECRET` entry.',
      tags: ['workers'],
      body: WebhookBody,
      response: { 204: Type.Null({ description: 'Stored, or acknowledged and ignored (a replay, a finished job, an older attempt)' }), ...errorResponses },
    },
  }, async (request, reply) => {
    await completeFromWebhook(app, verdicts.get(request)!.replayKey, request.body)
    return reply.code(204).send(null)
  })
}
