import fp from 'fastify-plugin'
import { ArchiveBusy, runArchive, type ArchiveReport, type LifecycleHooks } from '../lifecycle/archive.js'
import { lifecycleHooks } from '../lifecycle/hooks.js'
import { toError } from '../errors.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The data lifecycle (SPEC §12): the hooks for stored results, and the daily archive. */
    lifecycle: Lifecycle
  }
}

export interface Lifecycle {
  readonly hooks: LifecycleHooks
  /** Where archive files go (ARCHIVE_DIR). */
  readonly archiveDir: string
  /**
   * One daily run now: archives jobs older than ARCHIVE_AFTER_DAYS. `busy` when another replica
   * (or `npm run archive`) holds the lock, `off` without ARCHIVE_AFTER_DAYS.
   */
  runArchiveOnce(): Promise<ArchiveReport | 'busy' | 'off'>
}

export interface LifecyclePluginOptions {
  /** Hooks of the caller's, over those of src/lifecycle/hooks.ts. */
  hooks?: LifecycleHooks | undefined
  /** Run the daily archive on a timer (default: when ARCHIVE_AFTER_DAYS is set). Tests call runArchiveOnce. */
  start?: boolean | undefined
  /** Between runs (default a day). */
  everyMs?: number | undefined
  /** Before the first run after start-up (default a minute, so a start is not slowed). */
  firstDelayMs?: number | undefined
}

const DAY_MS = 86_400_000

/**
 * The daily archive (ARCHIVE_AFTER_DAYS): every replica tries once a day, and the archive's
 * named lock (GET_LOCK on MySQL) lets one run at a time; the others find it taken and wait for
 * the next day. A run in progress is awaited on close.
 */
export const lifecyclePlugin = fp<LifecyclePluginOptions>(async (app, options) => {
  const { config, clock, db, log } = app
  const hooks: LifecycleHooks = { ...lifecycleHooks(config, app.results.store), ...options.hooks }
  let running: Promise<unknown> | undefined
  const stop = new AbortController()

  const runArchiveOnce = async (): Promise<ArchiveReport | 'busy' | 'off'> => {
    if (config.archiveAfterDays === undefined) return 'off'
    const cutoffMs = clock.now() - config.archiveAfterDays * DAY_MS
    try {
      const report = await runArchive(db, { ...hooks, cutoffMs, dir: config.archiveDir, now: () => clock.now(), signal: stop.signal })
      if (report.archived > 0 || report.resumed > 0) log.info({ archived: report.archived, files: report.files.length, resumed: report.resumed }, 'archive: older jobs moved to archive files')
      return report
    } catch (err) {
      if (err instanceof ArchiveBusy) return 'busy'
      throw err
    }
  }
  app.decorate('lifecycle', { hooks, archiveDir: config.archiveDir, runArchiveOnce })

  if (config.archiveAfterDays === undefined || options.start === false) return
  let timer: NodeJS.Timeout | undefined
  let closed = false
  const schedule = (ms: number) => {
    timer = setTimeout(() => {
      running = runArchiveOnce().then(
        (r) => (r === 'busy' ? log.info('archive: another replica holds the archive lock; skipped until the next run') : undefined),
        (err: unknown) => log.error({ err: toError(err) }, 'archive: the daily run failed; it is finished by the next one'),
      ).finally(() => {
        running = undefined
        if (!closed) schedule(options.everyMs ?? DAY_MS)
      })
    }, ms)
    timer.unref()
  }
  schedule(options.firstDelayMs ?? 60_000)
  app.addHook('onClose', async () => {
    closed = true
    clearTimeout(timer)
    stop.abort()
    await running
  })
}, { name: 'lifecycle', dependencies: ['config', 'db', 'results'] })
