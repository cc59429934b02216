/**
 * A WordPress stand-in for events (SPEC §10): a real HTTP server on loopback that records every
 * POST (headers and raw body) and answers each with the status the test asks for, or never.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
export { adminOnly } from './admin-only.js'

export const EVENTS_SECRET = `whsec_${Buffer.from('events-test-secret-0123456789abc').toString('base64')}`


export interface ReceivedEvent {
  headers: IncomingHttpHeaders
  body: string
  json: { type: string; user_id: number; owner_key: string; job: Record<string, unknown>; metadata: unknown }
}

export type Answer = number | 'hang'

export interface EventsReceiver {
  url: string
  received: ReceivedEvent[]
  /** The answer to the n-th request (0-based); 200 unless set. */
  answer: (fn: (n: number, event: ReceivedEvent) => Answer) => void
  close: () => Promise<void>
}

export async function startEventsReceiver(): Promise<EventsReceiver> {
  const received: ReceivedEvent[] = []
  const hanging: ServerResponse[] = []
  let answerOf: (n: number, event: ReceivedEvent) => Answer = () => 200
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      let json: ReceivedEvent['json']
      try {
        json = JSON.parse(body) as ReceivedEvent['json']
      } catch {
        json = {} as ReceivedEvent['json']
      }
      const event = { headers: req.headers, body, json }
      const n = received.push(event) - 1
      const answer = answerOf(n, event)
      if (answer === 'hang') {
        hanging.push(res)
        return
      }
      res.writeHead(answer, { 'content-type': 'application/json' }).end(answer >= 300 ? '{"code":"broken","message":"the site is down"}' : '{"received":true}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/wp-json/ai-gateway/v1/events`,
    received,
    answer: (fn) => {
      answerOf = fn
    },
    close: async () => {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
