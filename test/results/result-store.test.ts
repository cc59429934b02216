/** The directory store and the link signature (SPEC §12), without an app. */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError } from '../../src/config.js'
import { resultLinkExp, resultLinkKey, signResultLink, verifyResultLink } from '../../src/results/result-link.js'
import { deleteStoredResults, DirectoryResultStore, isResultKey, resultKey, type ResultStore } from '../../src/results/result-store.js'
import { testConfig } from '../helpers.js'

const dir = mkdtempSync(join(tmpdir(), 'gw_results_unit_'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe('DirectoryResultStore', () => {
  const store = new DirectoryResultStore(join(dir, 'nested', 'results'))

  it('writes whole files, 0600 in 0700 directories, and replaces them whole', async () => {
    const key = resultKey(4242, 7)
    expect(isResultKey(key)).toBe(true)
    expect(key).toMatch(/^92\/4242-7-[0-9a-f]{32}\.json$/)
    await store.put(key, Buffer.from('{"a":1}'))
    expect((await store.get(key))?.toString()).toBe('{"a":1}')
    expect(statSync(join(store.root, key)).mode & 0o777).toBe(0o600)
    expect(statSync(join(store.root, key.split('/')[0]!)).mode & 0o777).toBe(0o700)
    await store.put(key, Buffer.from('{"a":2,"b":"é"}'))
    const opened = await store.open(key)
    expect(opened?.size).toBe(Buffer.byteLength('{"a":2,"b":"é"}'))
    const chunks: Buffer[] = []
    for await (const chunk of opened!.body) chunks.push(chunk as Buffer)
    expect(Buffer.concat(chunks).toString()).toBe('{"a":2,"b":"é"}')
    // No temporary file is left beside it.
    expect(readdirSync(join(store.root, key.split('/')[0]!))).toEqual([key.split('/')[1]])
  })

  it('reads a missing key as undefined and deletes it without error', async () => {
    const key = resultKey(1, 1)
    expect(await store.get(key)).toBeUndefined()
    expect(await store.open(key)).toBeUndefined()
    await expect(store.delete(key)).resolves.toBeUndefined()
  })

  it('refuses any key it could not have made (nothing leaves its directory)', async () => {
    for (const key of ['../escape.json', '00/../../x-1-00000000000000000000000000000000.json', '/etc/passwd', '00/1-1-abc.json', '']) {
      expect(isResultKey(key)).toBe(false)
      await expect(store.get(key)).rejects.toThrow(/not a result key/)
      await expect(store.put(key, Buffer.from('x'))).rejects.toThrow(/not a result key/)
      await expect(store.delete(key)).rejects.toThrow(/not a result key/)
    }
  })
})

describe('deleteStoredResults', () => {
  it('deletes each named key once, skips nulls and missing files, and reports failures after trying all', async () => {
    const store = new DirectoryResultStore(join(dir, 'delete'))
    const a = resultKey(10, 1)
    const b = resultKey(11, 2)
    await store.put(a, Buffer.from('1'))
    await store.put(b, Buffer.from('2'))
    await deleteStoredResults(store, [a, null, undefined, a, b, resultKey(12, 1)])
    expect(await store.get(a)).toBeUndefined()
    expect(await store.get(b)).toBeUndefined()

    const deleted: string[] = []
    const failing: ResultStore = {
      put: async () => {}, get: async () => undefined, open: async () => undefined,
      delete: async (key) => {
        if (key === 'bad') throw new Error('disk gone')
        deleted.push(key)
      },
    }
    await expect(deleteStoredResults(failing, ['bad', 'good'])).rejects.toThrow('disk gone')
    expect(deleted).toEqual(['good'])
  })
})

describe('result links', () => {
  const key = resultLinkKey('a secret of the site')

  it('expire at the next whole hour plus one, the same all hour long', () => {
    const hour = Date.UTC(2030, 0, 1, 10)
    expect(resultLinkExp(hour)).toBe(hour / 1000 + 7200)
    expect(resultLinkExp(hour + 3_599_999)).toBe(hour / 1000 + 7200)
    expect(resultLinkExp(hour + 3_600_000)).toBe(hour / 1000 + 10_800)
  })

  it('sign id, version and exp, each of which changes the signature', () => {
    const sig = signResultLink(key, 5, 3, 1000)
    expect(sig).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(verifyResultLink(key, 5, 3, 1000, sig)).toBe(true)
    expect(verifyResultLink(key, 6, 3, 1000, sig)).toBe(false)
    expect(verifyResultLink(key, 5, 4, 1000, sig)).toBe(false)
    expect(verifyResultLink(key, 5, 3, 1001, sig)).toBe(false)
    expect(verifyResultLink(key, 5, 3, 1000, sig.slice(1))).toBe(false)
    expect(verifyResultLink(resultLinkKey('another secret'), 5, 3, 1000, sig)).toBe(false)
  })
})

describe('RESULT_INLINE_MAX_BYTES and RESULT_STORE_DIR', () => {
  it('default to 65536 (never above RESULT_MAX_BYTES) and ./data/results', () => {
    const config = testConfig({})
    expect(config.resultInlineMaxBytes).toBe(65_536)
    expect(config.resultStoreDir).toBe('./data/results')
    expect(testConfig({ RESULT_MAX_BYTES: '4096' }).resultInlineMaxBytes).toBe(4096)
    expect(testConfig({ RESULT_INLINE_MAX_BYTES: '2048', RESULT_STORE_DIR: '/srv/results' })).toMatchObject({ resultInlineMaxBytes: 2048, resultStoreDir: '/srv/results' })
  })

  it('refuses an inline limit above RESULT_MAX_BYTES, naming the variable', () => {
    expect(() => testConfig({ RESULT_MAX_BYTES: '100000', RESULT_INLINE_MAX_BYTES: '100001' })).toThrow(ConfigError)
    expect(() => testConfig({ RESULT_MAX_BYTES: '100000', RESULT_INLINE_MAX_BYTES: '100001' })).toThrow(/^RESULT_INLINE_MAX_BYTES: must be at most RESULT_MAX_BYTES \(100000\)/)
    expect(() => testConfig({ RESULT_INLINE_MAX_BYTES: 'lots' })).toThrow(/^RESULT_INLINE_MAX_BYTES: must be a whole number/)
  })
})
