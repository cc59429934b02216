/**
 * Load generation, from the bench process, on loopback only.
 *
 * - closedLoop: autocannon, N connections each sending its next request when the previous answer
 *   arrives (throughput runs). Latency there is service time at saturation.
 * - openLoop: a fixed offered rate on a schedule decided in advance, over a fixed pool of
 *   connections; a request that finds every connection busy waits in the queue, and its latency is
 *   counted from its scheduled send. autocannon's own `overallRate` does not do this: each
 *   connection sends its share of a second back to back and then idles until the next second, and
 *   it measures from the moment it wrote the request, so a slow server makes it send later instead
 *   of counting the wait (coordinated omission). Its correction passes an expected interval of
 *   ceil(1 / per-connection rate) = 1 ms, which only adds synthetic samples below the real ones.
 */
import autocannon from 'autocannon'
import { Pool } from 'undici'

export interface RequestShape {
  headers: Record<string, string>
  body?: string
}

export interface LoadResult {
  /** Answers the caller counts as success (2xx by default). */
  ok: number
  other: number
  errors: number
  timeouts: number
  seconds: number
  /** ok / seconds */
  rps: number
  p50: number
  p99: number
  statuses: Record<string, number>
}

export interface ClosedLoopOptions {
  url: string
  method: 'GET' | 'POST'
  connections: number
  /** Run for this long; or, with `amount`, until that many answers arrived. */
  seconds?: number
  amount?: number
  request: () => RequestShape
  ok?: (status: number) => boolean
}

const is2xx = (status: number) => status >= 200 && status < 300

export async function closedLoop(o: ClosedLoopOptions): Promise<LoadResult> {
  const result = await autocannon({
    url: o.url,
    connections: o.connections,
    ...(o.amount ? { amount: o.amount } : { duration: o.seconds ?? 10 }),
    timeout: 30,
    requests: [{
      method: o.method,
      setupRequest: (req: autocannon.Request) => {
        const shape = o.request()
        return { ...req, headers: shape.headers, ...(shape.body === undefined ? {} : { body: shape.body }) }
      },
    }],
  })
  const ok = o.ok ?? is2xx
  const statuses: Record<string, number> = {}
  let okCount = 0
  let other = 0
  for (const [code, stat] of Object.entries(result.statusCodeStats ?? {})) {
    const n = stat.count ?? 0
    statuses[code] = n
    if (ok(Number(code))) okCount += n
    else other += n
  }
  const seconds = result.duration
  return {
    ok: okCount, other, errors: result.errors, timeouts: result.timeouts, seconds,
    rps: okCount / seconds, p50: result.latency.p50, p99: result.latency.p99, statuses,
  }
}

export interface OpenLoopOptions {
  origin: string
  path: string
  method: 'GET' | 'POST'
  /** Offered requests per second, evenly spaced. */
  rate: number
  connections: number
  seconds: number
  request: () => RequestShape
  ok?: (status: number) => boolean
}

export interface OpenLoopResult extends LoadResult {
  offered: number
  /** Latency from the scheduled send, ms. */
  p999: number
  max: number
  /** How late the generator itself issued requests (its own scheduling lag), p99, ms. */
  lagP99: number
}

export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

export async function openLoop(o: OpenLoopOptions): Promise<OpenLoopResult> {
  const pool = new Pool(o.origin, { connections: o.connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: 30_000, bodyTimeout: 30_000 })
  const ok = o.ok ?? is2xx
  const total = Math.round(o.rate * o.seconds)
  const interval = 1000 / o.rate
  const latencies: number[] = []
  const lags: number[] = []
  const statuses: Record<string, number> = {}
  let okCount = 0
  let other = 0
  let errors = 0
  let lastDone = 0
  const inFlight = new Set<Promise<void>>()
  const t0 = performance.now() + 20

  const fire = (scheduled: number) => {
    lags.push(performance.now() - scheduled)
    const shape = o.request()
    const p = pool.request({ origin: o.origin, path: o.path, method: o.method, headers: shape.headers, ...(shape.body === undefined ? {} : { body: shape.body }) })
      .then(async (res) => {
        await res.body.text()
        const done = performance.now()
        lastDone = done
        latencies.push(done - scheduled)
        statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
        if (ok(res.statusCode)) okCount++
        else other++
      }, () => {
        errors++
      })
      .finally(() => inFlight.delete(p))
    inFlight.add(p)
  }

  await new Promise<void>((resolve) => {
    let i = 0
    const tick = () => {
      const now = performance.now()
      while (i < total && t0 + i * interval <= now) fire(t0 + interval * i++)
      if (i >= total) resolve()
      else setTimeout(tick, Math.max(0, t0 + i * interval - performance.now()))
    }
    setTimeout(tick, 20)
  })
  // The backlog a slow server built up is part of the measurement: wait for it (bounded).
  const drained = await Promise.race([
    Promise.all([...inFlight]).then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), 60_000).unref()),
  ])
  const timeouts = drained ? 0 : inFlight.size
  await pool.destroy()
  const seconds = (Math.max(lastDone, t0) - t0) / 1000
  return {
    offered: total, ok: okCount, other, errors, timeouts, seconds,
    rps: okCount / Math.max(seconds, o.seconds),
    p50: percentile(latencies, 50), p99: percentile(latencies, 99), p999: percentile(latencies, 99.9),
    max: percentile(latencies, 100), lagP99: percentile(lags, 99), statuses,
  }
}
