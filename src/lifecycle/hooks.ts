import type { Config } from '../config.js'
import { loadResult } from '../results/large-results.js'
import { DirectoryResultStore, deleteStoredResults, type ResultStore } from '../results/result-store.js'
import type { LifecycleHooks } from './archive.js'

/**
 * The one place the data lifecycle learns about stored results (SPEC §12): the daily archive,
 * `npm run archive`, `npm run privacy` and the privacy routes all take their hooks from here.
 * A row whose result lives in the result store (`result_ref`) is archived with that result in its
 * line, so the archive alone holds the whole job, and its file is deleted with the row (archive
 * and erase alike). The service passes its own store; the command-line tools open the directory
 * that RESULT_STORE_DIR names, the one the service writes.
 */
export function lifecycleHooks(config: Readonly<Config>, store: ResultStore = new DirectoryResultStore(config.resultStoreDir)): LifecycleHooks {
  return {
    inlineResult: async (row) => (row.result_ref ? loadResult(store, row) : undefined),
    onDeleteRows: async (rows) => {
      const refs = rows.map((r) => r.result_ref).filter((k): k is string => typeof k === 'string' && k !== '')
      await deleteStoredResults(store, refs)
      return new Set(refs).size
    },
  }
}
