import { pino, stdSerializers, type BaseLogger, type DestinationStream, type Logger } from 'pino'

/**
 * Query parameters that carry credentials, by their decoded, lower-cased name: `?_wp%6Eonce=`
 * and `?%5Fwpnonce=` authenticate exactly like `?_wpnonce=`, so they are redacted like it.
 */
const SECRET_PARAMS = new Set(['_wpnonce', 'token', 'access_token', 'sig'])

function decodedName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' ')).toLowerCase()
  } catch {
    return raw.toLowerCase()
  }
}

/** The URL with the value of every credential-carrying query parameter replaced. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?')
  if (q < 0) return url
  const params = url.slice(q + 1).split('&').map((part) => {
    const eq = part.indexOf('=')
    const name = eq < 0 ? part : part.slice(0, eq)
    return SECRET_PARAMS.has(decodedName(name)) ? `${name}=[redacted]` : part
  })
  return `${url.slice(0, q + 1)}${params.join('&')}`
}

// In a database error's message only identifiers (column, key, table names) stay quoted; any
// other quoted text is a value from the statement ("Duplicate entry 'someone@example.com' …").
const SQL_IDENTIFIER = /(?:column|key|table|database|index|constraint|function|procedure|variable)\s*$/i

function scrubSqlMessage(message: string): string {
  return message.replace(/'(?:[^'\\]|\\.)*'/g, (quoted, offset: number) => (SQL_IDENTIFIER.test(message.slice(0, offset)) ? quoted : "'?'"))
}

/**
 * pino's error serializer, minus what a database error carries of the statement: mysql2 attaches
 * `sql` with every value filled in and repeats values in `sqlMessage`; neither is ever logged.
 */
export function serializeError(err: unknown): Record<string, unknown> {
  const out = stdSerializers.err(err as Error) as unknown as Record<string, unknown>
  const isSql = 'sql' in out || 'sqlMessage' in out || 'sqlState' in out
  delete out.sql
  delete out.sqlMessage
  if (isSql) {
    if (typeof out.message === 'string') out.message = scrubSqlMessage(out.message)
    if (typeof out.stack === 'string') out.stack = scrubSqlMessage(out.stack)
  }
  if (out.cause !== undefined && typeof out.cause === 'object' && out.cause !== null) out.cause = serializeError(out.cause)
  return out
}

/** The gateway's logger: credentials in headers and query strings, and SQL values, are never written. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'req.headers["x-wp-nonce"]'], censor: '[redacted]' },
    serializers: {
      req: (req: { method: string; url: string; ip?: string; id?: string }) => ({
        method: req.method,
        url: redactUrl(req.url),
        remoteAddress: req.ip,
      }),
      err: serializeError,
    },
  }
  return destination ? pino(options, destination) : pino(options)
}

/** What the gateway's modules log through: pino's methods, which Fastify's `app.log` has too. */
export type Log = Pick<BaseLogger, 'trace' | 'debug' | 'info' | 'warn' | 'error'>
