/**
 * The companion plugin's exporter and eraser (the real PHP CLI over the WordPress stubs) against
 * a listening gateway: its signed calls are accepted, the export turns the user's jobs into
 * WordPress exporter items with the request opened, and the erase removes that user's rows and
 * archive lines only.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildApp } from '../../src/app.js'
import { runArchive } from '../../src/lifecycle/archive.js'
import { DIALECTS, freshDatabase, testConfig } from '../helpers.js'
import { runCompanion } from '../support/companion-php.js'
import { archiveLines, seedJobs, type Seeded } from '../support/lifecycle-seed.js'
import { RUN } from '../support/run-tag.js'

const SECRET = `whsec_${randomBytes(32).toString('base64')}`
const USERS = { 'bob@example.test': 2, 'carol@example.test': 3 }

const EXPORT = String.raw`
$exporters = apply_filters('wp_privacy_personal_data_exporters', array());
$out['pages'][] = ai_test_response(call_user_func($exporters['ai-gateway']['callback'], $cfg['input']['email'], 1));
`
const ERASE = String.raw`
$erasers = apply_filters('wp_privacy_personal_data_erasers', array());
$out['result'] = ai_test_response(call_user_func($erasers['ai-gateway']['callback'], $cfg['input']['email'], 1));
`

describe.each(DIALECTS)('companion privacy calls against a listening gateway (%s)', (dialect) => {
  const name = `gw_archive_c${dialect[0]}_${RUN}`
  let db: { url: string; cleanup: () => Promise<void> }
  let dir: string
  let app: FastifyInstance
  let base: string
  let seeded: Seeded

  beforeAll(async () => {
    db = await freshDatabase(dialect, name)
    dir = mkdtempSync(join(tmpdir(), `${name}-files-`))
    const config = testConfig({ DATABASE_URL: db.url, AI_ENCRYPTION_KEY: randomBytes(32).toString('base64'), ARCHIVE_DIR: dir, AI_EVENTS_SECRET: SECRET })
    app = await buildApp(config, { logger: false, startWorkers: false })
    seeded = await seedJobs(app.db, config.encryptionKeys, Date.now())
    await runArchive(app.db, { cutoffMs: Date.now() - 30 * 86_400_000, dir, batchSize: 5 })
    await app.listen({ port: 0, host: '127.0.0.1' })
    base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  })
  afterAll(async () => {
    await app?.close()
    await db?.cleanup()
    rmSync(dir, { recursive: true, force: true })
  })

  const run = (script: string, email: string, secret = SECRET) =>
    runCompanion({ constants: { AI_EVENTS_SECRET: secret, AI_GATEWAY_URL: base }, users: USERS, input: { email }, script })
  const tableOf = async (userId: number) => (await app.db.db.selectFrom('ai_jobs').select('id').where('user_id', '=', userId).execute()).map((r) => Number(r.id)).sort((a, b) => a - b)

  it('exports the user\'s jobs as WordPress exporter items, the prompt opened', async () => {
    const result = await run(EXPORT, 'bob@example.test')
    const [page] = result.out.pages as Array<{ value: { data: Array<{ item_id: string; data: Array<{ name: string; value: string }> }>; done: boolean } }>
    expect(page!.value.done).toBe(true)
    const ids = page!.value.data.map((item) => Number(item.item_id.replace('ai-job-', ''))).sort((a, b) => a - b)
    // Those in the table and those in archive files alike.
    const archived = (await archiveLines(dir)).lines.filter((l) => l.user_id === 2).map((l) => Number(l.id))
    expect(archived.length).toBeGreaterThan(0)
    expect(ids).toEqual([...(await tableOf(2)), ...archived].sort((a, b) => a - b))
    for (const item of page!.value.data) {
      expect(item.data.find((d) => d.name === 'Prompt')?.value).toMatch(/^private words of user 2 #\d+$/)
      expect(item.data.find((d) => d.name === 'Metadata')?.value).toMatch(/^\{"post_id":\d+\}$/)
    }
  })

  it('is refused with another secret, and the admin sees the gateway\'s reason', async () => {
    const result = await run(EXPORT, 'bob@example.test', `whsec_${randomBytes(32).toString('base64')}`)
    expect(result.out.pages).toEqual([{ error: 'ai_gateway_request_failed', message: expect.stringContaining('answered 403: Signature refused (signature_mismatch)'), data: { status: 403 } }])
  })

  it('erases the user\'s rows and archive lines, and only theirs', async () => {
    const lines = (await archiveLines(dir)).lines
    const archived2 = lines.filter((l) => l.user_id === 2).length
    const rows2 = (await tableOf(2)).length
    const before3 = { rows: await tableOf(3), lines: lines.filter((l) => l.user_id === 3).length }
    expect(archived2).toBeGreaterThan(0)

    const result = await run(ERASE, 'bob@example.test')
    expect(result.out.result).toEqual({
      value: { items_removed: true, items_retained: false, messages: [`AI gateway: ${rows2} jobs, 0 stored results and ${archived2} archived jobs erased.`], done: true },
    })
    expect(await tableOf(2)).toEqual([])
    const after = (await archiveLines(dir)).lines
    expect(after.filter((l) => l.user_id === 2)).toEqual([])
    expect({ rows: await tableOf(3), lines: after.filter((l) => l.user_id === 3).length }).toEqual(before3)
    expect(after.length).toBe(seeded.old.size - archived2)
  })
})
