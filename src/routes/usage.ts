import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { errorResponses } from '../schemas/common.js'
import { UsageResponse } from '../schemas/usage.js'

/** `GET /usage` (SPEC §8): the caller's budget use, window by window. */
export async function usageRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.get('/usage', {
    config: { auth: 'user', noStore: true },
    schema: {
      summary: 'Your token budgets',
      description: 'Every window that limits the caller (its own and the site\'s), with the tokens used and reserved now and when it resets. Empty without AI_BUDGETS.',
      tags: ['jobs'],
      response: { 200: UsageResponse, ...errorResponses },
    },
  }, async (request) => ({ windows: app.budgets ? await app.budgets.usage(request.principal) : [] }))
}
