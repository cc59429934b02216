import fp from 'fastify-plugin'
import { JobEvents } from '../jobs/job-events.js'
import { JobWatcher } from '../jobs/job-watch.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Job events across replicas: wake-ups, changes and cancels (Redis pub/sub, or in process). */
    jobEvents: JobEvents
    /** The jobs this replica's streams follow: one database read per change, however many streams. */
    jobWatcher: JobWatcher
  }
}

export const eventsPlugin = fp(async (app) => {
  const events = new JobEvents(app.store, app.log)
  await events.start()
  const watcher = new JobWatcher(app.db, events, app.log)
  app.addHook('onClose', async () => {
    watcher.close()
    await events.stop()
  })
  app.decorate('jobEvents', events)
  app.decorate('jobWatcher', watcher)
}, { name: 'events', dependencies: ['store', 'db'] })
