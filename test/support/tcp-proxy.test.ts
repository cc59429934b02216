import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import mysql from 'mysql2/promise'
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js'

const CONNECTION_ERRORS = ['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE', 'ECONNREFUSED']

let proxy: TcpProxy
const open: mysql.Connection[] = []

async function connect(): Promise<mysql.Connection> {
  const conn = await mysql.createConnection({
    host: proxy.host,
    port: proxy.port,
    user: 'root',
    password: '',
    connectTimeout: 5_000,
  })
  // A fatal error with no query pending is emitted as 'error'; unheard, it would crash the worker.
  conn.on('error', () => {})
  open.push(conn)
  return conn
}

async function selectOne(conn: mysql.Connection): Promise<unknown> {
  const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT 1 AS one')
  return rows[0]?.one
}

/** Settles within `ms`, or reports that it did not. */
function within<T>(promise: Promise<T>, ms: number): Promise<{ settled: true; value?: T; error?: unknown } | { settled: false }> {
  return Promise.race([
    promise.then(
      (value) => ({ settled: true as const, value }),
      (error: unknown) => ({ settled: true as const, error }),
    ),
    new Promise<{ settled: false }>((resolve) => setTimeout(() => resolve({ settled: false }), ms)),
  ])
}

async function waitFor(check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 10))
  }
}

beforeEach(async () => {
  proxy = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: 3306 })
})

afterEach(async () => {
  for (const conn of open.splice(0)) conn.destroy()
  await proxy.close()
})

describe('startTcpProxy in front of MariaDB', () => {
  it('forwards a real connection', async () => {
    const conn = await connect()
    expect(await selectOne(conn)).toBe(1)
    expect(proxy.connectionCount).toBe(1)
    expect(proxy.state).toBe('open')
  })

  it('pause() breaks open connections and refuses new ones at once; resume() lets new ones through', async () => {
    const conn = await connect()
    expect(await selectOne(conn)).toBe(1)

    await proxy.pause()
    expect(proxy.state).toBe('reset')
    expect(proxy.connectionCount).toBe(0)

    let started = Date.now()
    const queryError = await selectOne(conn).then(
      () => undefined,
      (err: unknown) => err as NodeJS.ErrnoException,
    )
    expect(queryError).toBeInstanceOf(Error)
    expect(CONNECTION_ERRORS).toContain(queryError?.code)
    expect(Date.now() - started).toBeLessThan(1_000)

    started = Date.now()
    const connectError = await connect().then(
      () => undefined,
      (err: unknown) => err as NodeJS.ErrnoException,
    )
    expect(connectError).toBeInstanceOf(Error)
    expect(CONNECTION_ERRORS).toContain(connectError?.code)
    expect(Date.now() - started).toBeLessThan(1_000)

    proxy.resume()
    const again = await connect()
    expect(await selectOne(again)).toBe(1)
  })

  it('pause("blackhole") stalls traffic without breaking it; resume() delivers it', async () => {
    const conn = await connect()
    expect(await selectOne(conn)).toBe(1)

    await proxy.pause('blackhole')
    const pendingQuery = selectOne(conn)
    const pendingConnect = connect()
    expect(await within(pendingQuery, 300)).toEqual({ settled: false })
    expect(await within(pendingConnect, 50)).toEqual({ settled: false })

    proxy.resume()
    expect(await pendingQuery).toBe(1)
    expect(await selectOne(await pendingConnect)).toBe(1)
  })

  it('lets go of both sides when the client closes', async () => {
    const conn = await connect()
    expect(proxy.connectionCount).toBe(1)
    await conn.end()
    await waitFor(() => proxy.connectionCount === 0)
  })

  it('via() points a URL at the proxy', () => {
    expect(proxy.via('mysql://root@127.0.0.1:3306/gateway?socket=x')).toBe(`mysql://root@127.0.0.1:${proxy.port}/gateway?socket=x`)
    expect(proxy.via('redis://localhost:6379/2')).toBe(`redis://127.0.0.1:${proxy.port}/2`)
  })
})

describe('startTcpProxy in front of nothing', () => {
  it('resets the client when the target refuses', async () => {
    const dead = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: proxy.port })
    const deadPort = dead.port
    await dead.close()
    const broken = await startTcpProxy({ targetHost: '127.0.0.1', targetPort: deadPort })
    try {
      const error = await mysql
        .createConnection({ host: '127.0.0.1', port: broken.port, user: 'root', connectTimeout: 5_000 })
        .then(
          (c) => {
            c.destroy()
            return undefined
          },
          (err: unknown) => err as NodeJS.ErrnoException,
        )
      expect(CONNECTION_ERRORS).toContain(error?.code)
    } finally {
      await broken.close()
    }
  })
})
