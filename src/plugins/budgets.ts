import fp from 'fastify-plugin'
import { Budgets } from '../budgets/budgets.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Token budgets (SPEC §8); undefined without AI_BUDGETS. */
    budgets: Budgets | undefined
  }
}

export const budgetsPlugin = fp(async (app) => {
  const { config, db, store, clock, log, metrics } = app
  app.decorate('budgets', config.budgets ? new Budgets({ config: config.budgets, db, store, clock, log, metrics }) : undefined)
}, { name: 'budgets', dependencies: ['config', 'db', 'store', 'metrics'] })
