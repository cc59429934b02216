import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import {
  parseWebhookSecrets,
  signStandardWebhook,
  signXAiSignature,
  verifyWebhookSignature,
  type WebhookHeaders,
} from '../../src/webhook/verify-signature.js'

interface Vectors {
  x_ai_signature: { cases: { name: string; secret: string; raw_body: string; x_ai_signature: string }[] }
  standard_webhooks: {
    cases: { secret: string; webhook_id: string; webhook_timestamp: string; raw_body: string; webhook_signature: string }[]
    expected: string
  }
}

const vectors = JSON.parse(readFileSync(new URL('../fixtures/webhooks/vectors.json', import.meta.url), 'utf8')) as Vectors

const NOW_S = 1_760_000_000
const NOW_MS = NOW_S * 1000
const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
const SEED_SECRET = 'plain-seed-secret'
const BODY = Buffer.from('{"job_id":7,"idempotency_key":"k","status":"succeeded","result_json":{"output":"hi"}}')

function standardHeaders(secret: string, body: Buffer | string, timestampSeconds = NOW_S, id = 'msg_1'): WebhookHeaders {
  return { ...signStandardWebhook({ secret, id, timestampSeconds, body }) }
}

function seedHeaders(secret: string, body: Buffer | string, timestampSeconds = NOW_S): WebhookHeaders {
  return { 'x-ai-signature': signXAiSignature(secret, body), 'x-ai-timestamp': String(timestampSeconds) }
}

describe('verifyWebhookSignature: fixture vectors', () => {
  it.each(vectors.x_ai_signature.cases)('accepts the seed vector "$name"', (vector) => {
    const rawBody = Buffer.from(vector.raw_body, 'utf8')
    // The seed scheme does not sign the timestamp, so any fresh one goes with the vector.
    const headers = { 'x-ai-signature': vector.x_ai_signature, 'x-ai-timestamp': String(NOW_S) }
    const result = verifyWebhookSignature({ rawBody, headers, secrets: [vector.secret], nowMs: NOW_MS })
    expect(result).toEqual({
      ok: true,
      scheme: 'x-ai-signature',
      replayKey: `sha256:${createHash('sha256').update(rawBody).digest('hex')}`,
    })
    expect(signXAiSignature(vector.secret, vector.raw_body)).toBe(vector.x_ai_signature)
  })

  it.each(vectors.standard_webhooks.cases)('accepts the Standard Webhooks vector $webhook_id', (vector) => {
    const headers = {
      'webhook-id': vector.webhook_id,
      'webhook-timestamp': vector.webhook_timestamp,
      'webhook-signature': vector.webhook_signature,
    }
    const nowMs = Number(vector.webhook_timestamp) * 1000
    const result = verifyWebhookSignature({ rawBody: Buffer.from(vector.raw_body), headers, secrets: [vector.secret], nowMs })
    expect(result).toEqual({ ok: true, scheme: 'standard', replayKey: `id:${vector.webhook_id}` })
    const signed = signStandardWebhook({
      secret: vector.secret,
      id: vector.webhook_id,
      timestampSeconds: Number(vector.webhook_timestamp),
      body: vector.raw_body,
    })
    expect(signed['webhook-signature']).toBe(vectors.standard_webhooks.expected)
  })
})

describe('verifyWebhookSignature: refusals', () => {
  it('refuses a forged signature under both schemes', () => {
    const forged = Buffer.alloc(32, 7).toString('base64')
    const standard = { ...standardHeaders(SECRET, BODY), 'webhook-signature': `v1,${forged}` }
    expect(verifyWebhookSignature({ rawBody: BODY, headers: standard, secrets: [SECRET], nowMs: NOW_MS })).toEqual({ ok: false, reason: 'signature_mismatch' })
    const seed = { ...seedHeaders(SEED_SECRET, BODY), 'x-ai-signature': forged }
    expect(verifyWebhookSignature({ rawBody: BODY, headers: seed, secrets: [SEED_SECRET], nowMs: NOW_MS })).toEqual({ ok: false, reason: 'signature_mismatch' })
  })

  it('refuses a body changed after signing', () => {
    const changed = Buffer.from(BODY.toString().replace('"hi"', '"hj"'))
    expect(verifyWebhookSignature({ rawBody: changed, headers: standardHeaders(SECRET, BODY), secrets: [SECRET], nowMs: NOW_MS }).ok).toBe(false)
    expect(verifyWebhookSignature({ rawBody: changed, headers: seedHeaders(SEED_SECRET, BODY), secrets: [SEED_SECRET], nowMs: NOW_MS }).ok).toBe(false)
  })

  it('refuses a Standard Webhooks id or timestamp changed after signing', () => {
    const headers = standardHeaders(SECRET, BODY)
    const otherId = { ...headers, 'webhook-id': 'msg_2' }
    const otherTs = { ...headers, 'webhook-timestamp': String(NOW_S - 1) }
    expect(verifyWebhookSignature({ rawBody: BODY, headers: otherId, secrets: [SECRET], nowMs: NOW_MS }).ok).toBe(false)
    expect(verifyWebhookSignature({ rawBody: BODY, headers: otherTs, secrets: [SECRET], nowMs: NOW_MS }).ok).toBe(false)
  })

  it.each([
    ['121 s old', NOW_S - 121],
    ['121 s in the future', NOW_S + 121],
  ])('refuses a timestamp %s and accepts 120 s exactly', (_label, timestamp) => {
    const edge = timestamp < NOW_S ? NOW_S - 120 : NOW_S + 120
    for (const [headersFor, secret] of [[standardHeaders, SECRET], [seedHeaders, SEED_SECRET]] as const) {
      const stale = verifyWebhookSignature({ rawBody: BODY, headers: headersFor(secret, BODY, timestamp), secrets: [secret], nowMs: NOW_MS })
      expect(stale).toEqual({ ok: false, reason: 'timestamp_out_of_range' })
      const atEdge = verifyWebhookSignature({ rawBody: BODY, headers: headersFor(secret, BODY, edge), secrets: [secret], nowMs: NOW_MS })
      expect(atEdge.ok).toBe(true)
    }
  })

  it('refuses an unknown secret', () => {
    const headers = { ...standardHeaders('whsec_' + Buffer.from('another key').toString('base64'), BODY), ...seedHeaders('another', BODY) }
    expect(verifyWebhookSignature({ rawBody: BODY, headers, secrets: [SECRET, SEED_SECRET], nowMs: NOW_MS })).toEqual({ ok: false, reason: 'signature_mismatch' })
  })

  it('refuses when no secret is configured', () => {
    expect(verifyWebhookSignature({ rawBody: BODY, headers: standardHeaders(SECRET, BODY), secrets: [], nowMs: NOW_MS }).ok).toBe(false)
  })

  it('refuses a request without signature headers', () => {
    expect(verifyWebhookSignature({ rawBody: BODY, headers: {}, secrets: [SECRET], nowMs: NOW_MS })).toEqual({ ok: false, reason: 'missing_signature' })
  })

  const good = standardHeaders(SECRET, BODY)
  const goodSig = good['webhook-signature'] as string
  it.each<[string, WebhookHeaders]>([
    ['no webhook-id', { ...good, 'webhook-id': undefined }],
    ['empty webhook-id', { ...good, 'webhook-id': '' }],
    ['no webhook-timestamp', { ...good, 'webhook-timestamp': undefined }],
    ['non-numeric timestamp', { ...good, 'webhook-timestamp': 'yesterday' }],
    ['timestamp with a fraction', { ...good, 'webhook-timestamp': `${NOW_S}.5` }],
    ['negative timestamp', { ...good, 'webhook-timestamp': `-${NOW_S}` }],
    ['huge timestamp', { ...good, 'webhook-timestamp': '9'.repeat(400) }],
    ['no version prefix', { ...good, 'webhook-signature': goodSig.slice(3) }],
    ['unknown version only', { ...good, 'webhook-signature': goodSig.replace('v1,', 'v2,') }],
    ['not base64', { ...good, 'webhook-signature': 'v1,%%%%' }],
    ['truncated digest', { ...good, 'webhook-signature': goodSig.slice(0, 20) }],
    ['empty signature', { ...good, 'webhook-signature': '' }],
    ['only spaces', { ...good, 'webhook-signature': '   ' }],
    ['array header', { ...good, 'webhook-signature': [goodSig, goodSig] }],
    ['seed: no timestamp', { 'x-ai-signature': signXAiSignature(SEED_SECRET, BODY) }],
    ['seed: garbage signature', { 'x-ai-signature': '\u0000\u00ff', 'x-ai-timestamp': String(NOW_S) }],
    ['seed: hex digest', { 'x-ai-signature': createHash('sha256').update(BODY).digest('hex'), 'x-ai-timestamp': String(NOW_S) }],
  ])('refuses malformed headers without throwing: %s', (_label, headers) => {
    const result = verifyWebhookSignature({ rawBody: BODY, headers, secrets: [SECRET, SEED_SECRET], nowMs: NOW_MS })
    expect(result.ok).toBe(false)
  })

  it('never throws, whatever the secrets hold', () => {
    const headers = standardHeaders(SECRET, BODY)
    expect(verifyWebhookSignature({ rawBody: BODY, headers, secrets: ['whsec_', 'whsec_!!!', ''], nowMs: NOW_MS }).ok).toBe(false)
    expect(verifyWebhookSignature({ rawBody: BODY, headers, secrets: ['whsec_!!!', SECRET], nowMs: NOW_MS }).ok).toBe(true)
  })
})

describe('verifyWebhookSignature: acceptance rules', () => {
  it('accepts when one of several v1 values matches', () => {
    const good = standardHeaders(SECRET, BODY)
    const other = Buffer.alloc(32, 1).toString('base64')
    const headers = { ...good, 'webhook-signature': `v1,${other} v1a,${other} ${good['webhook-signature'] as string} v1,${other}` }
    expect(verifyWebhookSignature({ rawBody: BODY, headers, secrets: [SECRET], nowMs: NOW_MS })).toEqual({ ok: true, scheme: 'standard', replayKey: 'id:msg_1' })
  })

  it('accepts a delivery signed with the second secret entry (rotation), under both schemes', () => {
    const secrets = ['whsec_' + Buffer.from('the new key, not yet used').toString('base64'), SECRET]
    expect(verifyWebhookSignature({ rawBody: BODY, headers: standardHeaders(SECRET, BODY), secrets, nowMs: NOW_MS }).ok).toBe(true)
    const seed = seedHeaders(SECRET, BODY)
    expect(verifyWebhookSignature({ rawBody: BODY, headers: seed, secrets, nowMs: NOW_MS })).toMatchObject({ ok: true, scheme: 'x-ai-signature' })
  })

  it('uses the UTF-8 bytes of a secret without whsec_ as the Standard Webhooks key', () => {
    const result = verifyWebhookSignature({ rawBody: BODY, headers: standardHeaders(SEED_SECRET, BODY), secrets: [SEED_SECRET], nowMs: NOW_MS })
    expect(result).toMatchObject({ ok: true, scheme: 'standard' })
    // The same entry with a whsec_ prefix is a different key: its base64 decoding.
    const prefixed = 'whsec_' + Buffer.from(SEED_SECRET).toString('base64')
    expect(verifyWebhookSignature({ rawBody: BODY, headers: standardHeaders(SEED_SECRET, BODY), secrets: [prefixed], nowMs: NOW_MS }).ok).toBe(true)
    expect(verifyWebhookSignature({ rawBody: BODY, headers: standardHeaders(prefixed.replace('whsec_', 'whsex_'), BODY), secrets: [prefixed], nowMs: NOW_MS }).ok).toBe(false)
  })

  it('honours a custom drift', () => {
    const headers = standardHeaders(SECRET, BODY, NOW_S - 30)
    expect(verifyWebhookSignature({ rawBody: BODY, headers, secrets: [SECRET], nowMs: NOW_MS, driftSeconds: 10 }).ok).toBe(false)
    expect(verifyWebhookSignature({ rawBody: BODY, headers, secrets: [SECRET], nowMs: NOW_MS, driftSeconds: 30 }).ok).toBe(true)
  })
})

describe('parseWebhookSecrets', () => {
  it('splits, trims and drops blank entries', () => {
    expect(parseWebhookSecrets(` ${SECRET} , old-secret,, `)).toEqual([SECRET, 'old-secret'])
    expect(parseWebhookSecrets(undefined)).toEqual([])
    expect(parseWebhookSecrets('')).toEqual([])
  })

  it('refuses a whsec_ entry that is not base64, naming the variable but not the secret', () => {
    let message = ''
    try {
      parseWebhookSecrets('ok-secret,whsec_not*base64')
    } catch (err) {
      message = (err as Error).message
    }
    expect(message).toMatch(/^AI_WEBHOOK_SECRET: entry 2/)
    expect(message).not.toContain('not*base64')
  })
})
