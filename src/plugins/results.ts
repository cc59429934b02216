import fp from 'fastify-plugin'
import { LargeResults } from '../results/large-results.js'
import { createResultLinks, resultLinkKey, type ResultLinks } from '../results/result-link.js'
import { DirectoryResultStore, type ResultStore } from '../results/result-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Results over RESULT_INLINE_MAX_BYTES: where they are stored, and the writers' side of it. */
    results: LargeResults
    /** Signed `result_url` links for rows whose result is stored outside the table. */
    resultLinks: ResultLinks
  }
}

export interface ResultsPluginOptions {
  /** A store of the caller's (an S3-compatible one, a test's); otherwise files under RESULT_STORE_DIR. */
  store?: ResultStore | undefined
}

/**
 * Large results (SPEC §12). The link key is derived from AI_PUBLIC_TOKEN_SECRET; without that
 * secret no link can be signed, so results stay inline (up to RESULT_MAX_BYTES). The store's
 * directory is made on the first write, not at start-up.
 */
export const resultsPlugin = fp<ResultsPluginOptions>(async (app, options) => {
  const { config, clock } = app
  const key = config.publicTokenSecret ? resultLinkKey(config.publicTokenSecret) : undefined
  const store = options.store ?? new DirectoryResultStore(config.resultStoreDir)
  app.decorate('results', new LargeResults({ store, inlineMaxBytes: config.resultInlineMaxBytes, enabled: key !== undefined, log: app.log }))
  app.decorate('resultLinks', createResultLinks({ publicUrl: config.publicUrl, key, now: () => clock.now() }))
}, { name: 'results', dependencies: ['config'] })
