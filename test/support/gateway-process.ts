import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { TOKEN_SECRET } from '../helpers.js'

/**
 * Real gateway processes for end-to-end tests: `node --import tsx src/server.ts` with the given
 * environment, on a free port, ready once `/healthz` answers. Every process started here is
 * SIGKILLed by `killAllGateways()` (call it in afterAll) and, as a last resort, when the test
 * worker itself exits, so a failing test never leaves a gateway behind.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const OUTPUT_LINES = 2_000

export interface GatewayExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface GatewayProcess {
  name: string
  pid: number
  port: number
  /** `http://127.0.0.1:PORT` */
  url: string
  /** `http://127.0.0.1:PORT/wp-json/ai/v1` */
  api: string
  /** The last lines of stdout and stderr (pino JSON, mostly). */
  output: string[]
  exited: Promise<GatewayExit>
  readonly alive: boolean
  kill(signal?: NodeJS.Signals): void
  /** Sends `signal` and waits for the exit; SIGKILLs it if it takes longer than `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<GatewayExit>
}

const live = new Set<ChildProcess>()
let exitHookInstalled = false

function installExitHook(): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL')
  })
}

/** A port nobody listens on right now (the kernel's pick, released at once). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function spawnOnce(name: string, port: number, env: Record<string, string>): GatewayProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: String(port),
      AI_PUBLIC_TOKEN_SECRET: TOKEN_SECRET,
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  live.add(child)
  const output: string[] = []
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue
      output.push(line)
      if (output.length > OUTPUT_LINES) output.shift()
    }
  }
  child.stdout!.on('data', collect)
  child.stderr!.on('data', collect)
  const exited = new Promise<GatewayExit>((resolve) => {
    child.once('exit', (code, signal) => {
      live.delete(child)
      resolve({ code, signal })
    })
  })
  let done = false
  void exited.then(() => {
    done = true
  })
  const gateway: GatewayProcess = {
    name,
    pid: child.pid!,
    port,
    url: `http://127.0.0.1:${port}`,
    api: `http://127.0.0.1:${port}/wp-json/ai/v1`,
    output,
    exited,
    get alive() {
      return !done
    },
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (!done) child.kill(signal)
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30_000) {
      gateway.kill(signal)
      const timer = setTimeout(() => gateway.kill('SIGKILL'), timeoutMs)
      try {
        return await exited
      } finally {
        clearTimeout(timer)
      }
    },
  }
  return gateway
}

async function waitReady(gateway: GatewayProcess, timeoutMs: number): Promise<'ready' | 'exited'> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (!gateway.alive) return 'exited'
    try {
      const res = await fetch(`${gateway.url}/healthz`, { signal: AbortSignal.timeout(1_000) })
      if (res.ok) return 'ready'
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`gateway ${gateway.name} was not ready within ${timeoutMs} ms:\n${gateway.output.slice(-30).join('\n')}`)
}

/** Starts a gateway and waits until it answers `/healthz` (a few tries if the picked port was taken meanwhile). */
export async function startGateway(options: { name: string; env: Record<string, string>; readyTimeoutMs?: number }): Promise<GatewayProcess> {
  installExitHook()
  for (let tryIndex = 0; ; tryIndex++) {
    const gateway = spawnOnce(options.name, await freePort(), options.env)
    const state = await waitReady(gateway, options.readyTimeoutMs ?? 45_000).catch(async (err: unknown) => {
      await gateway.stop('SIGKILL')
      throw err
    })
    if (state === 'ready') return gateway
    const text = gateway.output.join('\n')
    if (tryIndex < 2 && /EADDRINUSE/.test(text)) continue
    throw new Error(`gateway ${options.name} exited during start-up (${JSON.stringify(await gateway.exited)}):\n${gateway.output.slice(-30).join('\n')}`)
  }
}

/** SIGKILLs every gateway still running and waits for them to go. */
export async function killAllGateways(): Promise<void> {
  const children = [...live]
  await Promise.all(children.map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      live.delete(child)
      resolve()
      return
    }
    child.once('exit', () => resolve())
    child.kill('SIGKILL')
  })))
}

/** POST /jobs over HTTP; returns the job id. */
export async function postJob(gateway: GatewayProcess, token: string, body: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${gateway.api}/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  })
  const text = await res.text()
  if (res.status !== 202) throw new Error(`POST /jobs on ${gateway.name} answered ${res.status}: ${text}`)
  return (JSON.parse(text) as { job_id: number }).job_id
}
