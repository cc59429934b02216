/**
 * What the machine is and who used its cores during a phase, read from /proc: the figures of a
 * shared 2-core machine only make sense next to how the cores were split.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg } from 'node:os'

// USER_HZ: /proc reports CPU time in these ticks; 100 on every Linux architecture Node ships for.
const TICKS_PER_SECOND = 100

export function cpuDescription(): string {
  const model = cpus()[0]?.model.trim() || 'unknown CPU'
  return `${model}, ${availableParallelism()} cores`
}

export function loadAverage(): string {
  return loadavg().map((n) => n.toFixed(2)).join(' ')
}

interface ProcStat {
  pid: number
  ppid: number
  comm: string
  ticks: number
}

function readProcesses(): ProcStat[] {
  const out: ProcStat[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const text = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const close = text.lastIndexOf(')')
      const comm = text.slice(text.indexOf('(') + 1, close)
      const fields = text.slice(close + 2).split(' ')
      // After "(comm) ": state, ppid, …; utime and stime are fields 14 and 15 of the whole line.
      out.push({ pid: Number(entry), ppid: Number(fields[1]), comm, ticks: Number(fields[11]) + Number(fields[12]) })
    } catch { /* exited while listing */ }
  }
  return out
}

function busyTicks(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
  return user! + nice! + system! + irq! + softirq! + steal!
}

/** A group of processes: by pids (with their descendants when asked) or by command name. */
export interface CpuGroup {
  label: string
  pids?: () => number[]
  withChildren?: boolean
  comm?: RegExp
}

export interface CpuSnapshot {
  at: number
  busy: number
  groups: Map<string, number>
}

export function cpuSnapshot(groups: CpuGroup[]): CpuSnapshot {
  const procs = readProcesses()
  const children = new Map<number, ProcStat[]>()
  for (const p of procs) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p])
  const byPid = new Map(procs.map((p) => [p.pid, p]))
  const result = new Map<string, number>()
  for (const group of groups) {
    let ticks = 0
    if (group.comm) {
      for (const p of procs) if (group.comm.test(p.comm)) ticks += p.ticks
    } else {
      const seen = new Set<number>()
      const stack = [...(group.pids?.() ?? [])]
      while (stack.length > 0) {
        const pid = stack.pop()!
        if (seen.has(pid)) continue
        seen.add(pid)
        ticks += byPid.get(pid)?.ticks ?? 0
        if (group.withChildren) for (const c of children.get(pid) ?? []) stack.push(c.pid)
      }
    }
    result.set(group.label, ticks)
  }
  return { at: performance.now(), busy: busyTicks(), groups: result }
}

export interface CpuSplit {
  seconds: number
  /** Cores busy on the whole machine, on average. */
  busy: number
  /** Cores used by each group, on average; "other" is everything else on the machine. */
  groups: Map<string, number>
}

/**
 * Cores used by each group between two snapshots, plus "other" (everything else on the machine:
 * other users' processes, the kernel). A process that exited before the second snapshot counts 0.
 */
export function cpuSplit(a: CpuSnapshot, b: CpuSnapshot): CpuSplit {
  const seconds = Math.max(1e-3, (b.at - a.at) / 1000)
  const cores = (ticks: number) => Math.max(0, ticks) / TICKS_PER_SECOND / seconds
  const groups = new Map<string, number>()
  let accounted = 0
  for (const [label, ticks] of b.groups) {
    const used = Math.max(0, ticks - (a.groups.get(label) ?? 0))
    accounted += used
    groups.set(label, cores(used))
  }
  groups.set('other', cores(b.busy - a.busy - accounted))
  return { seconds, busy: cores(b.busy - a.busy), groups }
}

export function formatCpuSplit(split: CpuSplit): string {
  const parts = [...split.groups].filter(([, c]) => c >= 0.01).map(([label, c]) => `${label} ${c.toFixed(2)}`)
  return `${split.busy.toFixed(2)} busy: ${parts.join(', ')}`
}
