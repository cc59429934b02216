import { onBody } from '../providers/fake-server.js'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

/**
 * A real HTTP server on loopback standing in for an OpenAI-compatible (`/…/chat/completions`) or
 * Anthropic (`/…/v1/messages`) API. Every request is recorded with its `Idempotency-Key`; a
 * `behavior` decides each answer and may hold a request open until the client gives up.
 */
export interface ProviderCall {
  /** Order of arrival, from 1. */
  seq: number
  path: string
  headers: IncomingHttpHeaders
  body: any
  /** The job's idempotency key as the gateway sent it (`''` when absent). */
  key: string
  /** This call's number among the calls with the same key and path prefix, from 1. */
  nthForKey: number
  /** True once the client closed the connection before an answer was written (an abort). */
  closedEarly: boolean
  /** Resolves when the client closes the connection before an answer (never, after an answer). */
  closed: Promise<void>
  /** Set when the answer was written. */
  answered: boolean
}

export type Reply =
  | { status?: number; json?: unknown; text?: string; headers?: Record<string, string>; delayMs?: number }
  /** Keep the request open until the client closes it or `release()` answers it. */
  | 'hold'

export type Behavior = (call: ProviderCall) => Reply | Promise<Reply>

export interface FakeProvider {
  /** `http://127.0.0.1:PORT` */
  origin: string
  /** A base URL in the SDK form for one "endpoint": `http://127.0.0.1:PORT/<name>/v1`. */
  baseUrl(name?: string): string
  calls: ProviderCall[]
  /** Calls whose path starts with `/<name>/`. */
  callsTo(name: string): ProviderCall[]
  callsFor(key: string): ProviderCall[]
  behavior: Behavior
  /** Calls currently held open. */
  readonly heldCount: number
  /** Answers every held call with `reply` (default: a normal completion). */
  release(reply?: Reply): void
  close(): Promise<void>
}

/** An OpenAI Chat Completions answer. */
export function chatCompletion(content: string, usage = { prompt_tokens: 7, completion_tokens: 3 }, finishReason = 'stop'): unknown {
  return {
    id: 'chatcmpl-test',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-test',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finishReason }],
    usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens },
  }
}

/** An Anthropic Messages answer. */
export function anthropicMessage(text: string): unknown {
  return {
    id: 'msg_test',
    type: 'message',
    role: 'assistant',
    model: 'claude-test',
    content: [{ type: 'text', text }],
    stop_reason: 'end_turn',
    usage: { input_tokens: 11, output_tokens: 5 },
  }
}

/** OpenAI's error body. */
export function openAiError(status: number, code: string, type = code, message = `simulated ${code}`): Reply {
  return { status, json: { error: { message, type, code, param: null } } }
}

/** The text the gateway sent as the prompt: `input` becomes a single user message. */
export function promptOf(call: ProviderCall): string {
  const messages = call.body?.messages as { role: string; content: string }[] | undefined
  return messages?.filter((m) => m.role === 'user').map((m) => m.content).join('\n') ?? ''
}

/** The default: answer like the provider the path names, echoing the prompt. */
export const echoBehavior: Behavior = (call) =>
  call.path.endsWith('/v1/messages') ? { json: anthropicMessage(`echo: ${promptOf(call)}`) } : { json: chatCompletion(`echo: ${promptOf(call)}`) }

export async function startFakeProvider(behavior: Behavior = echoBehavior): Promise<FakeProvider> {
  const calls: ProviderCall[] = []
  const held = new Set<{ call: ProviderCall; res: ServerResponse }>()
  const sockets = new Set<Socket>()
  const perKey = new Map<string, number>()
  let seq = 0

  const write = (call: ProviderCall, res: ServerResponse, reply: Exclude<Reply, 'hold'>): void => {
    if (call.closedEarly || res.writableEnded || res.destroyed) return
    call.answered = true
    const body = reply.text ?? JSON.stringify(reply.json ?? {})
    res.writeHead(reply.status ?? 200, { 'content-type': reply.text !== undefined ? 'text/plain' : 'application/json', ...reply.headers })
    res.end(body)
  }

  const fake: FakeProvider = {
    origin: '',
    baseUrl: (name = 'p') => `${fake.origin}/${name}/v1`,
    calls,
    callsTo: (name) => calls.filter((c) => c.path.startsWith(`/${name}/`)),
    callsFor: (key) => calls.filter((c) => c.key === key),
    behavior,
    get heldCount() {
      return held.size
    },
    release(reply: Reply = { json: chatCompletion('released') }) {
      for (const h of [...held]) {
        held.delete(h)
        if (reply !== 'hold') write(h.call, h.res, reply)
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }

  const server = createServer((req, res) => {
    onBody(req, (body) => {
      const path = req.url ?? ''
      const keyHeader = req.headers['idempotency-key']
      const key = Array.isArray(keyHeader) ? keyHeader[0] ?? '' : keyHeader ?? ''
      const scope = `${path.split('/')[1] ?? ''}|${key}`
      const nth = (perKey.get(scope) ?? 0) + 1
      perKey.set(scope, nth)
      let onClosed: () => void = () => {}
      const call: ProviderCall = {
        seq: ++seq, path, headers: req.headers, body, key, nthForKey: nth,
        closedEarly: false, answered: false,
        closed: new Promise<void>((resolve) => {
          onClosed = resolve
        }),
      }
      calls.push(call)
      res.on('close', () => {
        if (!res.writableFinished) {
          call.closedEarly = true
          onClosed()
        }
        for (const h of held) if (h.res === res) held.delete(h)
      })
      void (async () => {
        const reply = await fake.behavior(call)
        if (reply === 'hold') {
          held.add({ call, res })
          return
        }
        if (reply.delayMs) {
          await Promise.race([new Promise((r) => setTimeout(r, reply.delayMs)), call.closed])
        }
        write(call, res, reply)
      })().catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ error: { message: String(err), type: 'fake_provider_bug' } }))
        }
      })
    })
  })
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  fake.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return fake
}
