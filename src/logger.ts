import { pino, type BaseLogger, type DestinationStream, type Logger } from 'pino'

/** Query parameters that carry credentials and must not reach the logs. */
const SECRET_QUERY = /([?&](?:_wpnonce|token|access_token)=)[^&]*/gi

/** The gateway's logger: credentials in headers and query strings are never written. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-wp-nonce"]'], censor: '[redacted]' },
    serializers: {
      req: (req: { method: string; url: string; ip?: string; id?: string }) => ({
        method: req.method,
        url: req.url.replace(SECRET_QUERY, '$1[redacted]'),
        remoteAddress: req.ip,
      }),
    },
  }
  return destination ? pino(options, destination) : pino(options)
}

/** What the gateway's modules log through: pino's methods, which Fastify's `app.log` has too. */
export type Log = Pick<BaseLogger, 'trace' | 'debug' | 'info' | 'warn' | 'error'>
