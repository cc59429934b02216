import type { JobRow } from '../db/jobs-repository.js'
import { fromDbTime } from '../db/time.js'
import { openAiError, type OpenAiErrorBody } from './openai-errors.js'

/** What a finished job answered, read from its stored result (SPEC §4 Job JSON). */
export interface JobAnswer {
  content: string
  finishReason: string
  /** The model that answered (a fallback's, when one ran), else the job's. */
  model: string
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | undefined
}

export function completionId(jobId: number): string {
  return `chatcmpl-${jobId}`
}

export function createdSeconds(row: JobRow): number {
  return Math.floor(fromDbTime(row.created_at) / 1000)
}

function parsed(text: string | null): unknown {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/**
 * A succeeded job's answer. In-process results are `{ output, finish_reason, model, usage }`;
 * an external worker's `result_json` is any JSON: a string is the text itself, an object's
 * string `output` is, and anything else is sent as its JSON text. Usage is the row's token
 * counts (those of the call that answered); when the provider reported none, there is none.
 */
export function jobAnswer(row: JobRow): JobAnswer {
  const result = parsed(row.result_json)
  const obj = typeof result === 'object' && result !== null && !Array.isArray(result) ? result as Record<string, unknown> : undefined
  const content = typeof result === 'string' ? result
    : typeof obj?.output === 'string' ? obj.output
      : result === null ? '' : JSON.stringify(result)
  const input = row.input_tokens === null ? null : Number(row.input_tokens)
  const output = row.output_tokens === null ? null : Number(row.output_tokens)
  return {
    content,
    finishReason: typeof obj?.finish_reason === 'string' ? obj.finish_reason : 'stop',
    model: typeof obj?.model === 'string' && obj.model !== '' ? obj.model : row.model,
    usage: input === null && output === null ? undefined : { prompt_tokens: input ?? 0, completion_tokens: output ?? 0, total_tokens: (input ?? 0) + (output ?? 0) },
  }
}

/** The Chat Completions response of a succeeded job. */
export function chatCompletion(row: JobRow): Record<string, unknown> {
  const answer = jobAnswer(row)
  return {
    id: completionId(Number(row.id)),
    object: 'chat.completion',
    created: createdSeconds(row),
    model: answer.model,
    choices: [{ index: 0, message: { role: 'assistant', content: answer.content, refusal: null }, logprobs: null, finish_reason: answer.finishReason }],
    ...(answer.usage ? { usage: answer.usage } : {}),
  }
}

/** How a job that did not succeed is answered: the status, and OpenAI's error body. */
export interface JobFailure {
  status: number
  body: OpenAiErrorBody
}

/** Provider statuses that say the request itself was refused (too long, malformed): the client's to fix. */
const CLIENT_STATUSES = new Set([400, 413, 422])

/**
 * A job that ended without an answer (SPEC §11 leaves the status open):
 * - `failed` after the provider refused the request itself (400, 413, 422, e.g. a context that is
 *   too long): `400 invalid_request_error`, with the provider's code;
 * - `failed` otherwise (the provider's errors after every retry and fallback, a timeout, a lost
 *   external worker): `502 api_error`, with the provider's code when it gave one;
 * - `canceled` (by its owner or an admin, through the jobs API): `409 api_error`, code `job_canceled`;
 * - gone (erased while the call waited): `502 api_error`, code `job_gone`.
 * The message is the job's `error_text`, which its owner also reads on `GET /jobs/:id`.
 */
export function jobFailure(row: JobRow | undefined): JobFailure {
  if (!row) return { status: 502, body: openAiError('The job was removed before it finished.', 'api_error', 'job_gone') }
  const id = Number(row.id)
  if (row.status === 'canceled') return { status: 409, body: openAiError(`Job ${id} was canceled.`, 'api_error', 'job_canceled') }
  const result = parsed(row.result_json) as { error?: { code?: unknown; status?: unknown } } | null
  const providerCode = typeof result?.error?.code === 'string' ? result.error.code : null
  const providerStatus = typeof result?.error?.status === 'number' ? result.error.status : null
  const message = `Job ${id} failed: ${row.error_text ?? 'no reason was recorded'}`
  if (providerStatus !== null && CLIENT_STATUSES.has(providerStatus)) {
    return { status: 400, body: openAiError(message, 'invalid_request_error', providerCode ?? 'provider_rejected') }
  }
  return { status: 502, body: openAiError(message, 'api_error', providerCode ?? 'provider_error') }
}

/** One `chat.completion.chunk` (streamed answers), with `usage: null` when the client asked for usage. */
export function chunk(base: { id: string; created: number; model: string; includeUsage: boolean }, delta: Record<string, unknown>, finishReason: string | null): Record<string, unknown> {
  return {
    id: base.id,
    object: 'chat.completion.chunk',
    created: base.created,
    model: base.model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    ...(base.includeUsage ? { usage: null } : {}),
  }
}
