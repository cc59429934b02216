/**
 * The processes the bench starts (gateway, baseline, php-fpm, nginx): each is spawned with its own
 * log file, sampled for resident memory from /proc every 100 ms, and stopped by pid. Every process
 * is registered so that a failed run still stops what it started.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface Service {
  readonly name: string
  readonly pid: number
  readonly port: number
  readonly logPath: string
  /** Peak VmRSS of the process (MB) since it started, sampled every 100 ms. */
  peakRssMb(): number
  /** The peak since the previous call (or the start), then starts a new window: one phase's peak. */
  takePhasePeakRssMb(): number
  exited(): boolean
  stop(signal?: NodeJS.Signals): Promise<void>
}

const running = new Set<{ child: ChildProcess; stop: () => Promise<void> }>()
let onChange: (pids: number[]) => void = () => {}

/** Called with the pids of every running service whenever one starts or stops. */
export function watchServices(listener: (pids: number[]) => void): void {
  onChange = listener
}

function changed(): void {
  onChange([...running].map((s) => s.child.pid).filter((pid): pid is number => pid !== undefined))
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

export function rssMb(pid: number): number {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
    return kb / 1024
  } catch {
    return 0
  }
}

export interface StartOptions {
  name: string
  command: string
  args: string[]
  env?: Record<string, string>
  cwd?: string
  port: number
  logPath: string
  /** Resolves true once the service answers; polled every 100 ms until timeoutMs. */
  ready: () => Promise<boolean>
  timeoutMs?: number
}

export async function startService(options: StartOptions): Promise<Service> {
  const log = openSync(options.logPath, 'a')
  const child = spawn(options.command, options.args, {
    // Only what is passed: a variable left in the caller's shell (DATABASE_URL, AI_MODELS, …) must
    // not change what is measured.
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root', ...options.env },
    cwd: options.cwd,
    stdio: ['ignore', log, log],
  })
  closeSync(log)
  let exitCode: number | null | undefined
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal ? -1 : 0)
      resolve()
    })
  })
  child.once('error', () => {
    exitCode = -1
  })
  let peak = 0
  let phasePeak = 0
  const sampler = setInterval(() => {
    if (child.pid === undefined) return
    const mb = rssMb(child.pid)
    peak = Math.max(peak, mb)
    phasePeak = Math.max(phasePeak, mb)
  }, 100)
  const entry = {
    child,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      clearInterval(sampler)
      running.delete(entry)
      changed()
      if (exitCode !== undefined) return
      child.kill(signal)
      const killed = await Promise.race([exit.then(() => true), sleep(20_000).then(() => false)])
      if (!killed) {
        child.kill('SIGKILL')
        await exit
      }
    },
  }
  running.add(entry)
  changed()
  const service: Service = {
    name: options.name,
    pid: child.pid ?? -1,
    port: options.port,
    logPath: options.logPath,
    peakRssMb: () => peak,
    takePhasePeakRssMb: () => {
      const p = phasePeak
      phasePeak = 0
      return p
    },
    exited: () => exitCode !== undefined,
    stop: entry.stop,
  }
  const deadline = Date.now() + (options.timeoutMs ?? 30_000)
  while (Date.now() < deadline) {
    if (exitCode !== undefined) break
    if (await options.ready().catch(() => false)) return service
    await sleep(100)
  }
  await entry.stop('SIGKILL')
  throw new Error(`${options.name} did not start (exit code ${String(exitCode)}); its log: ${options.logPath}\n${tail(options.logPath)}`)
}

/** The last lines of a log file, for error messages. */
export function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

/** HTTP readiness: any answer below 500 from `url`. */
export function httpReady(url: string): () => Promise<boolean> {
  return async () => {
    const r = await fetch(url, { signal: AbortSignal.timeout(1_000) })
    await r.arrayBuffer()
    return r.status < 500
  }
}

/** Stops every process still running (on failure as on success). */
export async function stopAllServices(): Promise<void> {
  await Promise.all([...running].map((s) => s.stop()))
}

/** Last resort on exit: SIGKILL whatever is left, synchronously. */
export function killAllServicesNow(): void {
  for (const s of running) {
    try {
      s.child.kill('SIGKILL')
    } catch { /* already gone */ }
  }
}
