import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { waitFor } from '../helpers.js'

const sh = promisify(execFile)
const SERVER = fileURLToPath(new URL('../../src/server.ts', import.meta.url))
// tsx by absolute path: the child runs in an empty directory, where `--import tsx` would not resolve.
const TSX = fileURLToPath(new URL('../../node_modules/tsx/dist/cli.mjs', import.meta.url))

async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Runs one line of the banner exactly as a developer would paste it into a shell. */
async function paste(command: string): Promise<unknown> {
  const { stdout } = await sh('/bin/sh', ['-c', command], { timeout: 15_000 })
  return JSON.parse(stdout)
}

describe('the embedded default (no database configured)', () => {
  const cwd = mkdtempSync(join(tmpdir(), 'gw-t2-embedded-'))
  let child: ChildProcess | undefined
  let stdout = ''
  let stderr = ''

  afterAll(() => {
    // Only if an assertion failed before the SIGTERM below.
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    rmSync(cwd, { recursive: true, force: true })
  })

  it('starts with a banner whose two curl lines create a job and read it back succeeded; SIGTERM exits 0', async () => {
    const port = await freePort()
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: String(port), LOG_LEVEL: 'warn' }
    const proc = spawn(process.execPath, [TSX, SERVER], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk })
    proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })))

    const curls = await waitFor(() => {
      if (proc.exitCode !== null) throw new Error(`the server exited early (${proc.exitCode}): ${stderr}${stdout}`)
      const lines = stdout.split('\n').filter((l) => l.trimStart().startsWith('curl '))
      return lines.length >= 2 ? lines.map((l) => l.trim()) : undefined
    }, 30_000, 'the start-up banner')
    expect(curls).toHaveLength(2)
    const [createLine, readLine] = curls as [string, string]
    expect(createLine).toContain(`http://127.0.0.1:${port}/wp-json/ai/v1/jobs`)
    expect(createLine).toMatch(/-X POST/)
    expect(createLine).toMatch(/Authorization: Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/)
    expect(readLine).toContain(`http://127.0.0.1:${port}/wp-json/ai/v1/jobs`)

    // The embedded default keeps its SQLite file and generated secrets under ./data of the working directory.
    expect(existsSync(join(cwd, 'data', 'ai-gateway.sqlite'))).toBe(true)
    expect(statSync(join(cwd, 'data', 'dev-secrets.json')).mode & 0o777).toBe(0o600)

    const created = await paste(createLine) as { job_id: number; status: string; request_id: string }
    expect(created.status).toBe('pending')
    expect(Number.isInteger(created.job_id)).toBe(true)
    expect(typeof created.request_id).toBe('string')

    // The embedded pool runs on its own; the second line shows the job once it is done.
    const job = await waitFor(async () => {
      const listed = await paste(readLine) as { jobs: { job_id: number; status: string; result: { output: string } | null }[] }
      const first = listed.jobs[0]
      return first && first.job_id === created.job_id && first.status === 'succeeded' ? first : undefined
    }, 15_000, 'the job to succeed')
    expect(job.result?.output).toBe('Hello from WordPress')

    // The curl line's status code too: 202 for a new job (a different input, so the dedupe window does not answer).
    const status = await sh('/bin/sh', ['-c', `${createLine.replace('Hello from WordPress', 'Hello again')} -o /dev/null -w '%{http_code}'`])
    expect(status.stdout).toBe('202')

    proc.kill('SIGTERM')
    const { code, signal } = await exited
    expect(signal).toBeNull()
    expect(code).toBe(0)
    expect(stderr).toBe('')
  })
})
