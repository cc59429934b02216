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

function refused(message: string, info: RateLimitInfo): ApiError {
  const retryAfter = Math.max(1, info.resetSeconds)
  return new ApiError('ai_rate_limited', `${message} Try again in ${retryAfter} s.`, {
    headers: { 'Retry-After': String(retryAfter), ...rateLimitHeaders({ ...info, resetSeconds: retryAfter }) },
  })
}

/**
 * Takes one create from the owner's window (RATE_LIMIT_MAX) and, for a visitor, one from the
 * client address's window (RATE_LIMIT_IP_MAX, across every visitor id from that address, so a
 * bot that mints fresh sids still meets a limit). Throws `429 ai_rate_limited` when either is
 * spent; returns the owner's window for the RateLimit headers.
 */
export async function takeCreateSlot(services: Pick<JobServices, 'store' | 'config' | 'metrics'>, principal: Principal, clientIp: string, nowMs: number): Promise<RateLimitInfo | undefined> {
  const { rateLimitMax, rateLimitIpMax, rateLimitWindowSeconds } = services.config
  const windowMs = rateLimitWindowSeconds * 1000
  const window = (limit: number, decision: { remaining: number; resetMs: number }): RateLimitInfo => ({
    limit, remaining: decision.remaining, windowSeconds: rateLimitWindowSeconds, resetSeconds: Math.ceil(decision.resetMs / 1000),
  })
  if (rateLimitIpMax > 0 && principal.ownerKey.startsWith('s:')) {
    const decision = await services.store.consume(`rl:ip:${addressKey(clientIp)}`, rateLimitIpMax, windowMs, nowMs)
    if (!decision.allowed) {
      services.metrics.rateLimited.inc()
      throw refused(`Too many jobs from this address: at most ${rateLimitIpMax} every ${rateLimitWindowSeconds} seconds.`, window(rateLimitIpMax, decision))
    }
  }
  if (rateLimitMax <= 0) return undefined
  const decision = await services.store.consume(`rl:create:${principal.ownerKey}`, rateLimitMax, windowMs, nowMs)
  const info = window(rateLimitMax, decision)
  if (!decision.allowed) {
    services.metrics.rateLimited.inc()
    throw refused(`Too many jobs: at most ${rateLimitMax} every ${rateLimitWindowSeconds} seconds.`, info)
  }
  return info
}
