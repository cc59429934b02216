/**
 * Runs the WordPress companion plugin (examples/wordpress/ai-gateway-companion.php and the files
 * it requires) in the real PHP CLI, over the stubs in wordpress-stubs.php, then a test's own PHP.
 *
 * PHP runs asynchronously: a test's loopback HTTP server, standing in for the gateway, lives in
 * this process and must keep answering while PHP waits for it.
 *
 * PHP is required: without `php` on PATH these tests fail (CI installs php-cli).
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const COMPANION_DIR = fileURLToPath(new URL('../../examples/wordpress/', import.meta.url))
export const PLUGIN = join(COMPANION_DIR, 'ai-gateway-companion.php')
const STUBS = fileURLToPath(new URL('./wordpress-stubs.php', import.meta.url))

export const PHP_MISSING =
  'php (the PHP CLI) is not installed, but the companion plugin tests run it: install it with `apt-get install -y php-cli` (CI: add it to .ci/run).'

export function phpAvailable(): boolean {
  const r = spawnSync('php', ['-v'], { encoding: 'utf8' })
  return r.status === 0 && /^PHP \d/.test(r.stdout)
}

export interface CompanionRun {
  /** PHP run after the plugin is loaded; `$cfg['input']` holds `input`, and `$out` is returned. */
  script: string
  input?: unknown
  /** wp-config.php constants, defined before the plugin loads. */
  constants?: Record<string, string>
  /** Environment variables PHP sees besides PATH. */
  env?: Record<string, string>
  /** The options table, as `name → { value, autoload }`. */
  options?: Record<string, { value: unknown; autoload: unknown }>
  /** apply_filters() answers that win over the registered callbacks. */
  filters?: Record<string, unknown>
  /** wp-cron hooks wp_next_scheduled() reports as scheduled. */
  scheduled?: string[]
  /** get_user_by('email', …): e-mail → user id. */
  users?: Record<string, number>
  /** user_can() answers true for these `user:capability[:object]` strings, false otherwise. */
  grants?: string[]
  multisite?: boolean
  restUrl?: string
  redirectWorks?: boolean
  updatePostFails?: boolean
  /** More PHP files to require after the plugin (the examples). */
  require?: string[]
}

export interface CompanionResult {
  out: Record<string, unknown>
  calls: Array<[string, unknown[]]>
  hooks: Array<[kind: string, hook: string, callback: string, priority: number, acceptedArgs: number]>
  fired: string[]
  options: Record<string, { value: unknown; autoload: unknown }>
  /** What error_log() wrote, one entry a line. */
  errorLog: string[]
}

export async function runCompanion(run: CompanionRun): Promise<CompanionResult> {
  if (!phpAvailable()) throw new Error(PHP_MISSING)
  const dir = mkdtempSync(join(tmpdir(), 'gw_test_companion-'))
  const logFile = join(dir, 'error.log')
  const cfg = {
    plugin: PLUGIN,
    require: run.require ?? [],
    input: run.input ?? null,
    constants: run.constants ?? {},
    options: run.options ?? {},
    filters: run.filters ?? {},
    scheduled: run.scheduled ?? [],
    users: run.users ?? {},
    grants: run.grants ?? [],
    multisite: run.multisite ?? false,
    rest_url: run.restUrl ?? 'http://example.test/wp-json/',
    redirect_works: run.redirectWorks ?? true,
    update_post_fails: run.updatePostFails ?? false,
  }
  const code = `require ${JSON.stringify(STUBS)};\n${run.script}\n`
  const args = ['-d', 'display_errors=stderr', '-d', 'error_reporting=-1', '-d', 'log_errors=0', '-d', `error_log=${logFile}`, '-r', code]
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', AIGW_TEST: JSON.stringify(cfg), ...run.env }
  try {
    const { status, stdout, stderr } = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn('php', args, { env })
      let stdout = ''
      let stderr = ''
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
      child.on('error', reject)
      child.on('close', (status) => resolve({ status, stdout, stderr }))
    })
    if (status !== 0 || stderr.trim() !== '') throw new Error(`php failed (exit ${status}):\n${stderr}\n${stdout}`)
    let log = ''
    try {
      log = readFileSync(logFile, 'utf8')
    } catch {
      // Nothing was logged.
    }
    const parsed = JSON.parse(stdout) as Omit<CompanionResult, 'errorLog'>
    return { ...parsed, errorLog: log.split('\n').filter((line) => line !== '') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The argument lists of every recorded call to `name`. */
export function callsOf(result: CompanionResult, name: string): unknown[][] {
  return result.calls.filter(([fn]) => fn === name).map(([, args]) => args)
}
