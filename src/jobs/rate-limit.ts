import { isIPv4, isIPv6 } from 'node:net'
import type { Principal } from '../auth/principal.js'
import { ApiError } from '../errors.js'
import type { JobServices } from './services.js'

export interface RateLimitInfo {
  limit: number
  remaining: number
  windowSeconds: number
  resetSeconds: number
}

/** IETF httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`. */
export function rateLimitHeaders(info: RateLimitInfo): Record<string, string> {
  return {
    'RateLimit-Policy': `"create";q=${info.limit};w=${info.windowSeconds}`,
    RateLimit: `"create";r=${info.remaining};t=${info.resetSeconds}`,
  }
}

/** The eight 16-bit groups of an IPv6 address, `::` expanded and an embedded IPv4 tail converted. */
function ipv6Groups(ip: string): number[] {
  let text = ip.split('%')[0]!
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head = '', tail] = text.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const missing = tail === undefined ? 0 : 8 - left.length - right.length
  return [...left, ...Array<string>(missing).fill('0'), ...right].map((g) => parseInt(g, 16) || 0)
}

/**
 * The address a visitor limit counts under (SPEC §8): an IPv4 address as it is (also when it
 * arrives IPv4-mapped, `::ffff:a.b.c.d`), an IPv6 address by its /64, since one host is routinely
 * given a whole /64 and could otherwise walk through addresses.
 */
export function addressKey(ip: string): string {
  if (isIPv4(ip)) return ip
  if (!isIPv6(ip)) return ip
  const groups = ipv6Groups(ip)
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `${groups[6]! >> 8}.${groups[6]! & 255}.${groups[7]! >> 8}.${groups[7]! & 255}`
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(':')}::/64`
}

/** A rate window a create takes a hit from. */
export interface CreateWindow {
  key: string
  limit: number
  /** For the refusal's message. */
  what: string
}

/**
 * The windows one create takes a hit from: the client address's (RATE_LIMIT_IP_MAX) for a
 * visitor, across every visitor id from that address, so a bot that mints fresh sids still meets a
 * limit; then the owner's (RATE_LIMIT_MAX). The owner's comes last: its numbers are the ones the
 * RateLimit headers report.
 */
export function createWindows(config: Pick<JobServices['config'], 'rateLimitMax' | 'rateLimitIpMax' | 'rateLimitWindowSeconds'>, principal: Principal, clientIp: string): CreateWindow[] {
  const windows: CreateWindow[] = []
  const per = `every ${config.rateLimitWindowSeconds} seconds`
  if (config.rateLimitIpMax > 0 && principal.ownerKey.startsWith('s:')) {
    windows.push({ key: `rl:ip:${addressKey(clientIp)}`, limit: config.rateLimitIpMax, what: `Too many jobs from this address: at most ${config.rateLimitIpMax} ${per}.` })
  }
  if (config.rateLimitMax > 0) windows.push({ key: `rl:create:${principal.ownerKey}`, limit: config.rateLimitMax, what: `Too many jobs: at most ${config.rateLimitMax} ${per}.` })
  return windows
}

/** `429 ai_rate_limited` for the window that is full, with Retry-After and the RateLimit headers. */
export function rateLimited(window: CreateWindow, windowSeconds: number, resetMs: number): ApiError {
  const retryAfter = Math.max(1, Math.ceil(resetMs / 1000))
  return new ApiError('ai_rate_limited', `${window.what} Try again in ${retryAfter} s.`, {
    headers: { 'Retry-After': String(retryAfter), ...rateLimitHeaders({ limit: window.limit, remaining: 0, windowSeconds, resetSeconds: retryAfter }) },
  })
}
