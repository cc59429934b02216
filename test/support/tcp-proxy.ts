import net from 'node:net'
import { once } from 'node:events'

/**
 * A loopback TCP proxy in front of a real server (MariaDB, Redis, an HTTP provider) so a test can
 * make that server unreachable on demand, without mocks.
 *
 * - `pause()` ('reset', the default): every open connection is reset (RST) on both sides, and every
 *   new connection is reset as soon as it is accepted. Clients see ECONNRESET / "connection lost"
 *   at once, as when the server dies.
 * - `pause('blackhole')`: nothing is forwarded any more, in either direction, and new connections
 *   are accepted but not connected onwards: clients hang until their own timeouts, as in a network
 *   partition. Bytes are held, not dropped, so after `resume()` the old connections carry on.
 * - `resume()`: new connections are forwarded again (and blackholed ones flow again).
 *
 * The listening port never changes, so a URL built once stays valid across pauses.
 */
export interface TcpProxy {
  /** Always 127.0.0.1. */
  readonly host: string
  readonly port: number
  /** `127.0.0.1:PORT` */
  readonly address: string
  /** 'open', 'reset' or 'blackhole'. */
  readonly state: TcpProxyState
  /** Client connections currently held by the proxy. */
  readonly connectionCount: number
  /** Connections accepted since start, refused ones included. */
  readonly acceptedCount: number
  /**
   * The same URL pointed at the proxy: `via('mysql://root@127.0.0.1:3306/db')` gives
   * `mysql://root@127.0.0.1:PORT/db`.
   */
  via(url: string): string
  /** Resolves once every current connection is closed ('reset') or stalled ('blackhole'). */
  pause(mode?: 'reset' | 'blackhole'): Promise<void>
  resume(): void
  /** Closes the listener and every connection. */
  close(): Promise<void>
}

export type TcpProxyState = 'open' | 'reset' | 'blackhole'

export interface TcpProxyOptions {
  targetHost: string
  targetPort: number
}

interface Pair {
  client: net.Socket
  upstream: net.Socket | undefined
}

/** Sends RST where it can (a crashed peer), else just destroys. */
function reset(socket: net.Socket | undefined): void {
  if (!socket || socket.destroyed) return
  try {
    socket.resetAndDestroy()
  } catch {
    socket.destroy()
  }
}

// Set when a socket is made, because `socket.closed` turns true before 'close' is emitted.
const closeEvents = new WeakMap<net.Socket, Promise<void>>()

function track(socket: net.Socket): void {
  closeEvents.set(socket, new Promise((resolve) => socket.once('close', () => resolve())))
}

function closed(socket: net.Socket | undefined): Promise<void> {
  return (socket && closeEvents.get(socket)) ?? Promise.resolve()
}

export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  const { targetHost, targetPort } = options
  const pairs = new Set<Pair>()
  let state: TcpProxyState = 'open'
  let accepted = 0

  const stall = (pair: Pair): void => {
    pair.client.unpipe()
    pair.client.pause()
    if (pair.upstream) {
      pair.upstream.unpipe()
      pair.upstream.pause()
    }
  }

  const flow = (pair: Pair): void => {
    if (!pair.upstream) {
      connectUpstream(pair)
      return
    }
    pair.client.pipe(pair.upstream)
    pair.upstream.pipe(pair.client)
  }

  const connectUpstream = (pair: Pair): void => {
    const upstream = net.connect({ host: targetHost, port: targetPort })
    pair.upstream = upstream
    track(upstream)
    upstream.setNoDelay(true)
    // The target being down (ECONNREFUSED) or resetting reaches the client as a reset.
    upstream.on('error', () => reset(pair.client))
    upstream.on('close', () => {
      if (!pair.client.destroyed) pair.client.end()
    })
    pair.client.pipe(upstream)
    upstream.pipe(pair.client)
  }

  const server = net.createServer({ noDelay: true }, (client) => {
    accepted++
    if (state === 'reset') {
      client.on('error', () => {})
      reset(client)
      return
    }
    const pair: Pair = { client, upstream: undefined }
    pairs.add(pair)
    track(client)
    client.on('error', () => reset(pair.upstream))
    client.on('close', () => {
      pairs.delete(pair)
      if (pair.upstream && !pair.upstream.destroyed) pair.upstream.end()
    })
    if (state === 'blackhole') {
      // Connected onwards on resume(); until then the client waits for the server's greeting.
      client.pause()
      return
    }
    connectUpstream(pair)
  })

  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port

  return {
    host: '127.0.0.1',
    port,
    address: `127.0.0.1:${port}`,
    get state() {
      return state
    },
    get connectionCount() {
      return pairs.size
    },
    get acceptedCount() {
      return accepted
    },
    via(url: string): string {
      const u = new URL(url)
      u.hostname = '127.0.0.1'
      u.port = String(port)
      return u.toString()
    },
    async pause(mode: 'reset' | 'blackhole' = 'reset'): Promise<void> {
      if (mode === 'blackhole') {
        if (state === 'open') for (const pair of pairs) stall(pair)
        state = 'blackhole'
        return
      }
      state = 'reset'
      const all = [...pairs]
      for (const pair of all) {
        reset(pair.client)
        reset(pair.upstream)
      }
      await Promise.all(all.flatMap((p) => [closed(p.client), closed(p.upstream)]))
    },
    resume(): void {
      const wasBlackhole = state === 'blackhole'
      state = 'open'
      if (wasBlackhole) {
        for (const pair of pairs) flow(pair)
      }
    },
    async close(): Promise<void> {
      state = 'reset'
      const all = [...pairs]
      for (const pair of all) {
        pair.client.destroy()
        pair.upstream?.destroy()
      }
      await Promise.all([
        new Promise<void>((resolve) => server.close(() => resolve())),
        ...all.flatMap((p) => [closed(p.client), closed(p.upstream)]),
      ])
    },
  }
}
