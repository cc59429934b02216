/**
 * Runs beside the bench, in its own process group, so that a bench killed outright (SIGKILL, the
 * OOM killer, or tsx, which SIGKILLs a child that does not acknowledge a relayed Ctrl-C within a few
 * tens of milliseconds, as a busy load generator may not) still leaves nothing behind. The bench keeps a state file of what it started and what it
 * created; when the bench process is gone and the file is still there, this kills those process
 * trees, drops those databases and empties that Redis database, then removes the file.
 *
 * Usage: node --import tsx bench/support/reaper.ts <bench pid> <state file>
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import mysql from 'mysql2/promise'

export interface ReaperState {
  pids: number[]
  mysqlUrl: string
  databases: string[]
  /** Emptied with FLUSHDB; only ever a non-zero database of the bench's own. */
  redisUrl: string | undefined
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** The pid and its descendants, read from /proc (a php-fpm or nginx master and its workers). */
function tree(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)])
    } catch { /* gone */ }
  }
  const out: number[] = []
  const stack = [root]
  while (stack.length > 0) {
    const pid = stack.pop()!
    out.push(pid)
    stack.push(...(children.get(pid) ?? []))
  }
  return out
}

async function reap(state: ReaperState): Promise<void> {
  for (const pid of state.pids) {
    for (const p of tree(pid)) {
      try {
        process.kill(p, 'SIGKILL')
      } catch { /* already gone */ }
    }
  }
  const conn = await mysql.createConnection({ uri: `${state.mysqlUrl}/` }).catch(() => undefined)
  if (conn) {
    for (const db of state.databases) await conn.query(`DROP DATABASE IF EXISTS \`${db}\``).catch(() => {})
    await conn.end().catch(() => {})
  }
  if (state.redisUrl) {
    const redis = new Redis(state.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
    await redis.connect().then(() => redis.flushdb()).catch(() => {})
    redis.disconnect()
  }
}

const [benchPid, stateFile] = [Number(process.argv[2]), process.argv[3]!]
while (alive(benchPid)) await sleep(300)
if (existsSync(stateFile)) {
  try {
    await reap(JSON.parse(readFileSync(stateFile, 'utf8')) as ReaperState)
  } finally {
    rmSync(stateFile, { force: true })
  }
}
