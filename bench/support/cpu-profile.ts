/**
 * A short summary of a V8 .cpuprofile (written by `node --cpu-prof`): self time per function and
 * per area (a package, Node's internals, a folder of the gateway), so two profiles taken before
 * and after a change can be compared by eye.
 */
import { readFileSync } from 'node:fs'
import { relative } from 'node:path'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
  children?: number[]
}

interface CpuProfile {
  nodes: ProfileNode[]
  /** Microseconds on the monotonic clock that process.hrtime() reads. */
  startTime: number
  endTime: number
  samples?: number[]
  timeDeltas?: number[]
}

function shortUrl(url: string, root: string): string {
  if (url === '') return ''
  if (url.startsWith('node:')) return url
  const path = url.startsWith('file://') ? new URL(url).pathname : url
  const nm = path.lastIndexOf('/node_modules/')
  if (nm >= 0) return path.slice(nm + '/node_modules/'.length)
  return relative(root, path)
}

function area(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) return 'node internals'
  const pkg = /^(@[^/]+\/[^/]+|[^/.][^/]*)\//.exec(url)
  if (!url.startsWith('dist/') && pkg) return `package ${pkg[1]}`
  const gateway = /^dist\/src\/([^/]+)\//.exec(url)
  if (gateway) return `gateway src/${gateway[1]}/`
  return url.startsWith('dist/src/') ? 'gateway src/' : url
}

export interface ProfileSummary {
  /** Sampled time in the window (or the whole profile when no sample fell in it), ms. */
  totalMs: number
  idleMs: number
  /** Whether the summary covers only the window asked for. */
  windowed: boolean
  functions: { name: string; ms: number; share: number }[]
  areas: { name: string; ms: number; share: number }[]
  /** As `areas`, with the time of native code and Node's internals charged to the area that called them. */
  charged: { name: string; ms: number; share: number }[]
}

/** Time per profile node: each sample carries the time since the previous one. */
function timePerNode(profile: CpuProfile, window?: { fromUs: number; toUs: number }): Map<number, number> | undefined {
  const samples = profile.samples ?? []
  const deltas = profile.timeDeltas ?? []
  if (samples.length === 0 || samples.length !== deltas.length) return undefined
  const us = new Map<number, number>()
  let t = profile.startTime
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i]!
    if (window && (t < window.fromUs || t > window.toUs)) continue
    us.set(samples[i]!, (us.get(samples[i]!) ?? 0) + deltas[i]!)
  }
  return us.size > 0 ? us : undefined
}

/**
 * Self time by function and by area, over the samples taken inside `window` (hrtime microseconds)
 * when given; shares are of the busy (non-idle) time.
 */
export function summarizeCpuProfile(path: string, root: string, window?: { fromUs: number; toUs: number }, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile
  const windowed = window ? timePerNode(profile, window) : undefined
  const perNode = windowed ?? timePerNode(profile)
  const byFunction = new Map<string, number>()
  const byArea = new Map<string, number>()
  const byCharged = new Map<string, number>()
  const parent = new Map<number, ProfileNode>()
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  const areaOf = (n: ProfileNode) => area(shortUrl(n.callFrame.url, root), n.callFrame.functionName)
  const unattributed = (a: string) => a === '(native)' || a === 'node internals'
  const chargedArea = (n: ProfileNode): string => {
    const own = areaOf(n)
    if (!unattributed(own)) return own
    for (let p = parent.get(n.id); p && nodes.has(p.id); p = parent.get(p.id)) {
      const a = areaOf(p)
      if (!unattributed(a) && !a.startsWith('(')) return a
    }
    return own
  }
  // Without samples (an older format), hitCount at the mean sampling interval.
  const hits = profile.nodes.reduce((n, node) => n + (node.hitCount ?? 0), 0)
  const msPerHit = hits > 0 ? (profile.endTime - profile.startTime) / 1000 / hits : 0
  let idle = 0
  let total = 0
  for (const node of profile.nodes) {
    const ms = perNode ? (perNode.get(node.id) ?? 0) / 1000 : (node.hitCount ?? 0) * msPerHit
    if (ms === 0) continue
    total += ms
    const { functionName, lineNumber } = node.callFrame
    const url = shortUrl(node.callFrame.url, root)
    if (functionName === '(idle)') {
      idle += ms
      continue
    }
    const name = url ? `${functionName || '(anonymous)'} ${url}:${lineNumber + 1}` : functionName || '(anonymous)'
    byFunction.set(name, (byFunction.get(name) ?? 0) + ms)
    const a = area(url, functionName)
    byArea.set(a, (byArea.get(a) ?? 0) + ms)
    const charged = chargedArea(node)
    byCharged.set(charged, (byCharged.get(charged) ?? 0) + ms)
  }
  const busy = total - idle
  const rank = (m: Map<string, number>) => [...m]
    .sort((p, q) => q[1] - p[1])
    .slice(0, top)
    .map(([name, ms]) => ({ name, ms, share: busy > 0 ? ms / busy : 0 }))
  return { totalMs: total, idleMs: idle, windowed: windowed !== undefined, functions: rank(byFunction), areas: rank(byArea), charged: rank(byCharged) }
}
