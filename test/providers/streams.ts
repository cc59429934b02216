import type { IncomingMessage, ServerResponse } from 'node:http'

/**
 * Recorded provider streams (in the shape the real APIs send) and a way to serve them over a
 * real loopback socket in chosen pieces.
 */

/** `data: {json}` events of an OpenAI Chat Completions stream, ending with `data: [DONE]`. */
export function openAiStream(deltas: string[], options: { finishReason?: string; usage?: { prompt_tokens: number; completion_tokens: number } | null; done?: boolean; eol?: string } = {}): string {
  const eol = options.eol ?? '\n'
  const base = { id: 'chatcmpl-s', object: 'chat.completion.chunk', created: 1, model: 'gpt-test' }
  const events: string[] = []
  const withUsage = options.usage !== null
  const event = (chunk: unknown) => events.push(`data: ${JSON.stringify(chunk)}${eol}${eol}`)
  event({ ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }], ...(withUsage ? { usage: null } : {}) })
  for (const text of deltas) event({ ...base, choices: [{ index: 0, delta: { content: text }, finish_reason: null }], ...(withUsage ? { usage: null } : {}) })
  event({ ...base, choices: [{ index: 0, delta: {}, finish_reason: options.finishReason ?? 'stop' }], ...(withUsage ? { usage: null } : {}) })
  if (withUsage) {
    const usage = options.usage ?? { prompt_tokens: 9, completion_tokens: deltas.length }
    event({ ...base, choices: [], usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } })
  }
  if (options.done !== false) events.push(`data: [DONE]${eol}${eol}`)
  return events.join('')
}

/** The events of an Anthropic Messages stream, each with its `event:` line, as the API sends them. */
export function anthropicStream(deltas: string[], options: { stopReason?: string; inputTokens?: number; outputTokens?: number; finalUsage?: boolean; stop?: boolean; eol?: string } = {}): string {
  const eol = options.eol ?? '\n'
  const events: string[] = []
  const event = (type: string, data: Record<string, unknown>) => events.push(`event: ${type}${eol}data: ${JSON.stringify({ type, ...data })}${eol}${eol}`)
  event('message_start', {
    message: {
      id: 'msg_s', type: 'message', role: 'assistant', model: 'claude-test', content: [], stop_reason: null, stop_sequence: null,
      usage: { input_tokens: options.inputTokens ?? 25, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 },
    },
  })
  event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } })
  event('ping', {})
  for (const text of deltas) event('content_block_delta', { index: 0, delta: { type: 'text_delta', text } })
  event('content_block_stop', { index: 0 })
  // A tool call's JSON is not output text.
  event('content_block_start', { index: 1, content_block: { type: 'tool_use', id: 'toolu_1', name: 'lookup', input: {} } })
  event('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: '{"q": "x"}' } })
  event('content_block_stop', { index: 1 })
  event('message_delta', { delta: { stop_reason: options.stopReason ?? 'end_turn', stop_sequence: null }, ...(options.finalUsage === false ? {} : { usage: { output_tokens: options.outputTokens ?? 15 } }) })
  if (options.stop !== false) event('message_stop', {})
  return events.join('')
}

export type StreamEnd = 'end' | 'destroy' | 'hold'

/**
 * Writes an event stream in the given pieces, each one flushed to the socket and followed by a
 * turn of the event loop, so the client reads them apart; then ends the answer, destroys the
 * connection (a reset mid-stream) or holds it open.
 */
export async function writeInPieces(res: ServerResponse, pieces: (string | Buffer)[], end: StreamEnd = 'end', headers: Record<string, string> = {}): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', ...headers })
  res.flushHeaders()
  for (const [i, piece] of pieces.entries()) {
    if (res.destroyed) return
    if (i > 0) await new Promise<void>((resolve) => setTimeout(resolve, 1))
    await new Promise<void>((resolve) => res.write(piece, () => resolve()))
  }
  if (end === 'end') res.end()
  else if (end === 'destroy') res.socket?.destroy()
}

/** `text` cut at the given byte offsets. */
export function cutAt(text: string, offsets: number[]): Buffer[] {
  const bytes = Buffer.from(text, 'utf8')
  const pieces: Buffer[] = []
  let from = 0
  for (const at of [...offsets].sort((a, b) => a - b)) {
    if (at <= from || at >= bytes.length) continue
    pieces.push(bytes.subarray(from, at))
    from = at
  }
  pieces.push(bytes.subarray(from))
  return pieces
}

/** A small seeded generator (mulberry32), so a failing random chunking can be replayed. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Random cut offsets for `text`: between 1 and `maxCuts` of them, from `random`. */
export function randomCuts(text: string, random: () => number, maxCuts = 12): number[] {
  const length = Buffer.byteLength(text, 'utf8')
  const count = 1 + Math.floor(random() * maxCuts)
  return Array.from({ length: count }, () => 1 + Math.floor(random() * (length - 1)))
}

/** Resolves when the client closes the request's connection. */
export function closedBy(req: IncomingMessage): Promise<void> {
  return new Promise<void>((resolve) => req.socket.once('close', () => resolve()))
}

/** `text` up to the end of the first event that contains `marker`: a stream cut right after it. */
export function throughEventWith(text: string, marker: string): string {
  const at = text.indexOf(marker)
  if (at < 0) throw new Error(`no event holds ${marker}`)
  const end = text.indexOf('\n\n', at)
  return text.slice(0, end + 2)
}
