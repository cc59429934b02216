import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Sleep } from '../../src/providers/retry.js'

/** What the fake provider saw. */
export interface SeenRequest {
  method: string
  path: string
  headers: IncomingHttpHeaders
  body: unknown
}

export type FakeHandler = (seen: SeenRequest, res: ServerResponse, req: IncomingMessage) => void

/** A real HTTP server on loopback standing in for OpenAI or Anthropic. */
export interface FakeServer {
  /** `http://127.0.0.1:PORT`, no trailing slash. */
  url: string
  requests: SeenRequest[]
  close(): Promise<void>
}

/** Reads a request's whole body: parsed JSON when it is JSON, the raw text otherwise. */
export function onBody(req: IncomingMessage, done: (body: unknown) => void): void {
  const chunks: Buffer[] = []
  req.on('data', (chunk: Buffer) => chunks.push(chunk))
  req.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8')
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {
      // keep the raw text
    }
    done(body)
  })
}

export async function startFakeServer(handler: FakeHandler): Promise<FakeServer> {
  const requests: SeenRequest[] = []
  const server = createServer((req, res) => {
    onBody(req, (body) => {
      const seen: SeenRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body }
      requests.push(seen)
      handler(seen, res, req)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers })
  res.end(JSON.stringify(body))
}

/** A sleep that records the asked delays and returns at once, so retries need no real waiting. */
export function recordingSleep(): { sleep: Sleep; delays: number[] } {
  const delays: number[] = []
  return {
    delays,
    sleep: async (ms) => {
      delays.push(ms)
    },
  }
}

/** A random source that plays back the given values, then 0.5. */
export function sequence(...values: number[]): () => number {
  return () => values.shift() ?? 0.5
}

export const KEY = 'a'.repeat(64)
