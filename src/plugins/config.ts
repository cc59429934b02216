import fp from 'fastify-plugin'
import { systemClock, type Clock } from '../clock.js'
import type { Config } from '../config.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The configuration, read and validated once (src/config.ts), frozen. */
    config: Readonly<Config>
    /** The injected clock and jitter source. */
    clock: Clock
  }
}

export interface ConfigPluginOptions {
  config: Readonly<Config>
  clock?: Clock | undefined
}

/** The configuration and the clock, which every other plugin reads. */
export const configPlugin = fp<ConfigPluginOptions>(async (app, options) => {
  app.decorate('config', options.config)
  app.decorate('clock', options.clock ?? systemClock)
}, { name: 'config' })
