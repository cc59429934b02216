import { ApiError } from '../errors.js'
import type { JobParams, Message, RequestRules } from '../jobs/job-request.js'
import type { ChatCompletionBody } from '../schemas/openai.js'
import type { CreateJobBody } from '../schemas/job.js'

/** A Chat Completions call as a job: the `POST /jobs` body it creates, and how to answer it. */
export interface ChatCall {
  job: CreateJobBody
  stream: boolean
  includeUsage: boolean
}

/** Text parts are joined with a line break, so two parts never run into one word. */
export const PART_SEPARATOR = '\n'

function invalid(field: string, reason: string, openaiCode = 'invalid_value'): ApiError {
  return new ApiError('ai_invalid_request', `${field}: ${reason}`, { details: { field, reason, openai_code: openaiCode } })
}

/** A refused field is one whose being ignored would change what the client gets back. */
function refused(field: string, reason: string): ApiError {
  return invalid(field, `${reason}; this endpoint answers text only, one choice per call`, 'unsupported_parameter')
}

/**
 * Fields OpenAI defines that a job cannot honour, with the values that ask for nothing (and so
 * are accepted): `tools: []`, `tool_choice: "none"`, `logprobs: false`, `response_format: { type: "text" }`,
 * `modalities: ["text"]`.
 */
function refuseUnsupported(body: Record<string, unknown>): void {
  const present = (name: string) => body[name] !== undefined && body[name] !== null
  for (const name of ['tools', 'functions']) {
    if (present(name) && !(Array.isArray(body[name]) && (body[name] as unknown[]).length === 0)) throw refused(name, 'tools and functions are not supported')
  }
  if (present('tool_choice') && body.tool_choice !== 'none') throw refused('tool_choice', 'tools are not supported')
  if (present('function_call') && body.function_call !== 'none') throw refused('function_call', 'functions are not supported')
  if (body.logprobs === true) throw refused('logprobs', 'log probabilities are not supported')
  if (present('top_logprobs')) throw refused('top_logprobs', 'log probabilities are not supported')
  if (present('audio')) throw refused('audio', 'audio output is not supported')
  if (present('modalities') && !(Array.isArray(body.modalities) && body.modalities.every((m) => m === 'text'))) {
    throw refused('modalities', 'only text output is supported')
  }
  if (present('response_format')) {
    const format = body.response_format as { type?: unknown } | undefined
    if (typeof format !== 'object' || format?.type !== 'text') throw refused('response_format', 'only the text format is supported')
  }
}

/** One message's text: a string, or its text parts joined. Non-text parts are refused. */
function messageText(content: unknown, field: string): string {
  if (typeof content === 'string') return content
  if (!Array.isArray(content)) throw invalid(`${field}.content`, 'is required', 'missing_required_parameter')
  return content.map((part: { type?: unknown; text?: unknown }, j) => {
    if (part.type !== 'text') throw refused(`${field}.content[${j}].type`, `a ${String(part.type)} part is not supported`)
    if (typeof part.text !== 'string') throw invalid(`${field}.content[${j}].text`, 'must be a string')
    return part.text
  }).join(PART_SEPARATOR)
}

/**
 * Reads a Chat Completions body (SPEC §11) as the `POST /jobs` body of the job it becomes:
 * `messages` (roles system, developer read as system, user, assistant; text parts joined),
 * `temperature`, `top_p`, `max_tokens` or `max_completion_tokens`, `stop`; and how the call is
 * answered (`stream`, `stream_options.include_usage`). The model must be allowed (else a 404 the
 * route renders as `model_not_found`); every other refusal is a 400 naming the field as the
 * client sent it.
 */
export function readChatCall(body: ChatCompletionBody, rules: RequestRules): ChatCall {
  const raw = body as Record<string, unknown>
  if (!rules.allowedModels.has(body.model)) {
    throw new ApiError('ai_not_found', `The model '${body.model}' does not exist or you do not have access to it.`, { details: { field: 'model', reason: 'model_not_found' } })
  }
  refuseUnsupported(raw)

  const messages: Message[] = body.messages.map((m, i) => {
    const field = `messages[${i}]`
    if (m.role === 'tool' || m.role === 'function') throw refused(`${field}.role`, `a ${m.role} message is not supported`)
    const extra = m as Record<string, unknown>
    if (extra.tool_calls !== undefined && extra.tool_calls !== null) throw refused(`${field}.tool_calls`, 'tool calls are not supported')
    if (extra.function_call !== undefined && extra.function_call !== null) throw refused(`${field}.function_call`, 'function calls are not supported')
    return { role: m.role === 'developer' ? 'system' : m.role, content: messageText(m.content, field) }
  })

  const params: JobParams = {}
  if (body.temperature !== undefined && body.temperature !== null) params.temperature = body.temperature
  if (body.top_p !== undefined && body.top_p !== null) params.top_p = body.top_p
  const maxTokens = body.max_tokens ?? undefined
  const maxCompletion = body.max_completion_tokens ?? undefined
  if (maxTokens !== undefined && maxCompletion !== undefined && maxTokens !== maxCompletion) {
    throw invalid('max_completion_tokens', 'differs from max_tokens; send one of them')
  }
  const max = maxCompletion ?? maxTokens
  if (max !== undefined) {
    const cap = rules.maxTokensFor(body.model)
    if (max > cap) throw invalid(maxCompletion !== undefined ? 'max_completion_tokens' : 'max_tokens', `must be at most ${cap}`)
    params.max_tokens = max
  }
  const stop = body.stop ?? undefined
  // `stop: []` asks for nothing.
  if (stop !== undefined && !(Array.isArray(stop) && stop.length === 0)) params.stop = stop

  const job: CreateJobBody = { model: body.model, messages }
  if (Object.keys(params).length > 0) job.params = params
  return { job, stream: body.stream === true, includeUsage: body.stream_options?.include_usage === true }
}
