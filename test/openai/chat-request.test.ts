import { describe, expect, it } from 'vitest'
import { ApiError } from '../../src/errors.js'
import { inputHash, parseJobBody, type RequestRules } from '../../src/jobs/job-request.js'
import { readChatCall } from '../../src/openai/chat-request.js'
import type { ChatCompletionBody } from '../../src/schemas/openai.js'

const rules: RequestRules = { allowedModels: new Set(['echo', 'small']), defaultModel: 'echo', maxTokensFor: (m) => (m === 'small' ? 100 : 4096) }
const read = (body: Record<string, unknown>) => readChatCall({ model: 'echo', messages: [{ role: 'user', content: 'hi' }], ...body } as ChatCompletionBody, rules)
const refusal = (body: Record<string, unknown>): { status: number; field: unknown } => {
  try {
    read(body)
  } catch (err) {
    if (err instanceof ApiError) return { status: err.status, field: err.details?.field }
    throw err
  }
  throw new Error('not refused')
}

describe('readChatCall', () => {
  it('maps the body onto the job body: roles, joined text parts, params', () => {
    const call = read({
      messages: [{ role: 'developer', content: 'rules' }, { role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }, { role: 'assistant', content: 'ok', name: 'bot' }],
      temperature: 0.5, top_p: 0.9, max_completion_tokens: 12, stop: ['END'], stream: true, stream_options: { include_usage: true },
      user: 'u1', seed: 4, presence_penalty: 0, n: 1, tools: [], tool_choice: 'none', logprobs: false, response_format: { type: 'text' },
    })
    expect(call.job).toEqual({
      model: 'echo',
      messages: [{ role: 'system', content: 'rules' }, { role: 'user', content: 'a\nb' }, { role: 'assistant', content: 'ok' }],
      params: { temperature: 0.5, top_p: 0.9, max_tokens: 12, stop: ['END'] },
    })
    expect(call.stream).toBe(true)
    expect(call.includeUsage).toBe(true)
  })

  it('reads nulls and an empty stop as not given', () => {
    expect(read({ temperature: null, top_p: null, max_tokens: null, stop: [], stream: null }).job).toEqual({ model: 'echo', messages: [{ role: 'user', content: 'hi' }] })
  })

  it('hashes like the POST /jobs body with the same messages, so the dedupe window spans both', () => {
    const viaOpenAi = parseJobBody(read({ max_tokens: 7 }).job, rules, undefined).request
    const viaJobs = parseJobBody({ model: 'echo', messages: [{ role: 'user', content: 'hi' }], params: { max_tokens: 7 } }, rules, undefined).request
    expect(inputHash(viaOpenAi)).toBe(inputHash(viaJobs))
  })

  it('refuses what a job cannot honour, naming the field as sent', () => {
    expect(refusal({ model: 'nope' })).toEqual({ status: 404, field: 'model' })
    expect(refusal({ tools: [{ type: 'function' }] })).toEqual({ status: 400, field: 'tools' })
    expect(refusal({ functions: [{ name: 'f' }] })).toEqual({ status: 400, field: 'functions' })
    expect(refusal({ tool_choice: 'auto' })).toEqual({ status: 400, field: 'tool_choice' })
    expect(refusal({ response_format: { type: 'json_object' } })).toEqual({ status: 400, field: 'response_format' })
    expect(refusal({ logprobs: true })).toEqual({ status: 400, field: 'logprobs' })
    expect(refusal({ modalities: ['text', 'audio'] })).toEqual({ status: 400, field: 'modalities' })
    expect(refusal({ messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: {} }] }] })).toEqual({ status: 400, field: 'messages[0].content[0].type' })
    expect(refusal({ messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 't' }] }] })).toEqual({ status: 400, field: 'messages[0].tool_calls' })
    expect(refusal({ messages: [{ role: 'assistant', content: null }] })).toEqual({ status: 400, field: 'messages[0].content' })
    expect(refusal({ max_tokens: 5, max_completion_tokens: 6 })).toEqual({ status: 400, field: 'max_completion_tokens' })
    expect(refusal({ model: 'small', max_completion_tokens: 101 })).toEqual({ status: 400, field: 'max_completion_tokens' })
  })
})
