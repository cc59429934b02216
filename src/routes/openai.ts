import { randomUUID } from 'node:crypto'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import Type from 'typebox'
import type { JobRow } from '../db/jobs-repository.js'
import { describeError } from '../error-handler.js'
import { ApiError, toWordPressError } from '../errors.js'
import { createJob, mayCreate } from '../jobs/create-job.js'
import { FollowAborted, followJob } from '../jobs/follow-job.js'
import { rateLimitHeaders } from '../jobs/rate-limit.js'
import { readChatCall } from '../openai/chat-request.js'
import { chatCompletion, chunk, completionId, createdSeconds, jobAnswer, jobFailure } from '../openai/chat-response.js'
import { openAiError, toOpenAiError, type OpenAiErrorBody } from '../openai/openai-errors.js'
import { StreamRelay } from '../openai/stream-relay.js'
import { ChatCompletion, ChatCompletionBody, ChatCompletionHeaders, ModelList, openAiErrorResponses } from '../schemas/openai.js'
import { eventStreamHeaders, HEARTBEAT_MS, STREAM_SLOT_TTL_MS, STREAMS_PER_OWNER } from './events.js'

interface SchemaError { keyword: string; instancePath: string; parentSchema?: Record<string, unknown> }

/**
 * A union's own reason (`x-error`) names the problem better than the first branch that failed
 * (`must be string` for a content that is a number): such an error goes first.
 */
function preferUnionReason(error: FastifyError): void {
  const list = error.validation as SchemaError[] | undefined
  if (!list || list.length < 2) return
  const union = list.find((e) => e.keyword === 'anyOf' && typeof e.parentSchema?.['x-error'] === 'string')
  if (union && list[0]!.instancePath.startsWith(union.instancePath)) list.unshift(union)
}

/**
 * The OpenAI-compatible endpoint (SPEC §11), under `{PUBLIC_URL path}/wp-json/ai/v1/openai`, so
 * an OpenAI SDK works with `baseURL` set there and a token, application password or WordPress
 * login in place of the API key. Every call is a job, created through the same path as
 * `POST /jobs`; every answer that is not a success is in OpenAI's error shape.
 */
export async function openAiRoutes(fastify: FastifyInstance): Promise<void> {
  /** A result kept in the result store (SPEC §12) is read back: the answer always carries the text. */
  const withResultInline = async (row: JobRow): Promise<JobRow> => {
    if (!row.result_ref) return row
    const bytes = await fastify.results.store.get(row.result_ref)
    return { ...row, result_json: bytes === undefined ? null : bytes.toString('utf8') }
  }
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const jobUrl = (id: number) => `${app.config.publicUrl}/wp-json/ai/v1/jobs/${id}`
  const startedSeconds = Math.floor(app.clock.now() / 1000)

  // The same sorting of errors as every other route, in the shape OpenAI SDKs parse.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    preferUnionReason(error)
    const answer = toOpenAiError(describeError(error, request, app.config.requestMaxBytes, () => app.metrics.databaseUnavailable.inc()))
    return reply.code(answer.status).headers(answer.headers).send(answer.body)
  })
  app.setNotFoundHandler((request, reply) => {
    const answer = toOpenAiError({ status: 404, headers: {}, body: toWordPressError('rest_no_route', `Invalid URL (${request.method} ${request.url.split('?')[0]})`, 404) })
    return reply.code(404).send(answer.body)
  })

  // Calls end when the app closes (SIGTERM); their jobs go on.
  const open = new Set<() => void>()
  const waiting = new Set<() => void>()
  app.addHook('preClose', async () => {
    for (const end of [...open, ...waiting]) end()
  })

  app.get('/models', {
    config: { auth: 'wordpress-user' },
    schema: {
      summary: 'List the allowed models (OpenAI-compatible)',
      description: 'The allowed models (AI_MODELS keys and AI_DEFAULT_MODEL), in the shape of OpenAI\'s `GET /v1/models`; `owned_by` names the provider that serves each. WordPress users only: a visitor token is refused (403).',
      tags: ['openai'],
      response: { 200: ModelList, ...openAiErrorResponses },
    },
  }, async () => ({
    object: 'list' as const,
    data: [...app.requestRules.allowedModels].sort().map((id) => ({
      id, object: 'model' as const, created: startedSeconds,
      owned_by: app.config.workerUrl ? 'external' : app.providers.resolve(id).provider.name,
    })),
  }))

  app.post('/chat/completions', {
    config: { auth: 'wordpress-user' },
    schema: {
      summary: 'Create a chat completion (OpenAI-compatible)',
      description: 'The Chat Completions body becomes a job (the same auth, rate limits, budgets, dedupe window and `Idempotency-Key` as POST /jobs), and the call waits for it: the `chat.completion` response, or with `stream: true` its `chat.completion.chunk` stream ending with `data: [DONE]`. `n` > 1, tools, functions and non-text parts are refused; other unknown fields are ignored. A failed job is a 502 `api_error` (400 when the provider refused the request itself). WordPress users only: a visitor token is refused (403).',
      tags: ['openai'],
      headers: ChatCompletionHeaders,
      body: ChatCompletionBody,
      response: {
        200: {
          description: 'The completion, or its chunk stream',
          content: { 'application/json': { schema: ChatCompletion }, 'text/event-stream': { schema: Type.String() } },
        },
        ...openAiErrorResponses,
      },
    },
  }, async (request, reply) => {
    const { principal } = request
    await mayCreate(principal)
    const call = readChatCall(request.body, app.requestRules)

    // The client going away (even while the job is being created) stops the wait; the job goes on (its result is on GET /jobs/:id).
    const gone = new AbortController()
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) gone.abort()
    })

    // A streamed call is an open stream of its owner's (SPEC §8), counted before any job is made.
    const slotKey = `streams:${principal.ownerKey}`
    const slot = randomUUID()
    const holdSlot = () => app.store.holdSlot(slotKey, slot, STREAMS_PER_OWNER, STREAM_SLOT_TTL_MS, app.clock.now())
    if (call.stream && !(await holdSlot())) {
      throw new ApiError('ai_too_many_streams', `At most ${STREAMS_PER_OWNER} streams may be open at once; close one first.`, { headers: { 'Retry-After': '15' } })
    }
    let result: Awaited<ReturnType<typeof createJob>>
    try {
      result = await createJob(app, principal, {
        body: call.job, headerKey: request.headers['idempotency-key'], requestId: request.id, clientIp: request.ip,
      })
    } catch (err) {
      if (call.stream) await app.store.releaseSlot(slotKey, slot).catch(() => {})
      throw err
    }
    const jobId = result.kind === 'replayed' ? Number(result.row.id) : result.jobId
    const known = result.kind === 'replayed' ? result.row : undefined
    const headers: Record<string, string> = { Location: jobUrl(jobId) }
    if (result.kind === 'replayed') headers['Idempotent-Replayed'] = 'true'
    else if (result.rateLimit) Object.assign(headers, rateLimitHeaders(result.rateLimit))

    if (!call.stream) {
      // At shutdown the wait ends with a 503 the SDKs retry: the same body then finds the same
      // job (the dedupe window, or its Idempotency-Key) on another replica.
      const closing = () => gone.abort('shutdown')
      waiting.add(closing)
      const end = await followJob(app, jobId, { signal: gone.signal, ...(known ? { known } : {}) }).catch((err: unknown) => {
        if (err instanceof FollowAborted) return null
        throw err
      }).finally(() => waiting.delete(closing))
      if (end === null && gone.signal.reason === 'shutdown') {
        throw new ApiError('ai_unavailable', `This gateway is shutting down; job ${jobId} goes on. Send the same request again to wait for it elsewhere.`, { headers: { 'Retry-After': '1', ...headers } })
      }
      if (end === null) return reply.hijack()
      reply.headers(headers)
      if (end?.status === 'succeeded') return reply.code(200).type('application/json').send(chatCompletion(await withResultInline(end)))
      const failure = jobFailure(end)
      // The gateway already retried the job (JOB_MAX_ATTEMPTS, fallbacks); an SDK retry would
      // only start a new job, which is the caller's own decision.
      return reply.code(failure.status).header('x-should-retry', 'false').send(failure.body)
    }

    await streamJob(request, reply, { jobId, model: call.job.model!, known, headers, includeUsage: call.includeUsage, signal: gone, release: () => app.store.releaseSlot(slotKey, slot), renew: holdSlot })
  })

  /**
   * The job's deltas as `chat.completion.chunk`s (SPEC §9, §11): a first chunk with the role at
   * once, the text as it streams (see StreamRelay), the rest of the stored output when the job
   * ends (all of it in external mode, where nothing streams), then the chunk with
   * `finish_reason`, the usage chunk when `stream_options.include_usage` asked for it, and
   * `data: [DONE]`. A job that does not succeed, or a retry whose text differs from what was
   * already sent, ends the stream with an error event (the SDKs throw it) and no `[DONE]`.
   */
  async function streamJob(request: FastifyRequest, reply: FastifyReply, o: {
    jobId: number; model: string; known: JobRow | undefined; headers: Record<string, string>; includeUsage: boolean
    signal: AbortController; release: () => Promise<void>; renew: () => Promise<boolean>
  }): Promise<void> {
    const row = o.known
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { ...eventStreamHeaders(request.id), ...o.headers })
    // Chunks name the model asked for; the last ones the model that answered (a fallback's).
    const base = { id: completionId(o.jobId), created: row ? createdSeconds(row) : Math.floor(app.clock.now() / 1000), model: o.model, includeUsage: o.includeUsage }
    let ended = false
    const send = (data: unknown) => {
      if (!ended) res.write(`data: ${JSON.stringify(data)}\n\n`)
    }
    const finish = () => {
      if (ended) return
      ended = true
      open.delete(stop)
      clearInterval(heartbeat)
      o.release().catch(() => {})
      res.end()
    }
    const fail = (body: OpenAiErrorBody) => {
      send(body)
      finish()
    }
    // At shutdown: the stream cannot move elsewhere, so it says why it ends.
    const stop = () => {
      send(openAiError(`This gateway is shutting down; job ${o.jobId} goes on: read its result on GET /jobs/${o.jobId}.`, 'api_error', 'service_unavailable'))
      o.signal.abort()
      finish()
    }
    open.add(stop)
    const heartbeat = setInterval(() => {
      if (ended) return
      res.write(': keep-alive\n\n')
      o.renew().catch(() => {})
    }, HEARTBEAT_MS)
    heartbeat.unref()

    send(chunk(base, { role: 'assistant', content: '' }, null))
    const relay = new StreamRelay()
    const diverged = () => openAiError(
      `The provider's stream broke and its retry answered differently; the text already sent cannot be taken back. Job ${o.jobId} goes on: read its result on GET /jobs/${o.jobId}.`,
      'api_error', 'stream_reset',
    )
    const stopFollowing = new AbortController()
    o.signal.signal.addEventListener('abort', () => stopFollowing.abort(), { once: true })
    let end: JobRow | undefined
    try {
      end = await followJob(app, o.jobId, {
        signal: stopFollowing.signal,
        ...(row ? { known: row } : {}),
        onDelta: (delta) => {
          if ('reset' in delta) return relay.reset()
          const text = relay.delta(delta.index, delta.text)
          if (text === 'diverged') {
            fail(diverged())
            stopFollowing.abort()
          } else if (text !== '') {
            send(chunk(base, { content: text }, null))
          }
        },
      })
    } catch (err) {
      if (!(err instanceof FollowAborted)) request.log.error({ err }, 'following a streamed job failed')
      finish()
      return
    }
    if (end?.status !== 'succeeded') return fail(jobFailure(end).body)
    const answer = jobAnswer(await withResultInline(end))
    const rest = relay.finish(answer.content)
    if (rest === 'diverged') return fail(diverged())
    if (rest !== '') send(chunk(base, { content: rest }, null))
    const last = { ...base, model: answer.model }
    send(chunk(last, {}, answer.finishReason))
    if (o.includeUsage) send({ id: base.id, object: 'chat.completion.chunk', created: base.created, model: answer.model, choices: [], usage: answer.usage ?? null })
    if (!ended) res.write('data: [DONE]\n\n')
    finish()
  }
}
