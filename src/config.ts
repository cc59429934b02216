import { readFileSync } from 'node:fs'
import { BudgetsConfigError, parseBudgets, type BudgetsConfig } from './budgets/config.js'
import { parseKeyring, type Keyring } from './jobs/request-crypto.js'
import { PROVIDER_NAMES as PROVIDERS, type ModelConfig, type ProviderName } from './providers/types.js'
import { parseDbHost, parseWpConfig } from './wordpress/wp-config.js'


export interface WordPressSecrets {
  AUTH_KEY?: string
  AUTH_SALT?: string
  SECURE_AUTH_KEY?: string
  SECURE_AUTH_SALT?: string
  LOGGED_IN_KEY?: string
  LOGGED_IN_SALT?: string
  NONCE_KEY?: string
  NONCE_SALT?: string
  SECRET_KEY?: string
  COOKIEHASH?: string
}

export interface Config {
  port: number
  host: string
  databaseUrl: string
  /** True when no database was configured: SQLite, memory store, echo, generated secrets, banner. */
  embedded: boolean
  tablePrefix: string
  wpConfigPath: string | undefined
  redisUrl: string | undefined
  /** Origin and path of the site, without a trailing slash. */
  publicUrl: string
  /** The path part of PUBLIC_URL + `/wp-json/ai/v1`. */
  routePrefix: string
  provider: ProviderName
  providerUrl: string | undefined
  providerApiKey: string | undefined
  defaultModel: string
  models: Record<string, ModelConfig>
  maxTokens: number
  workerConcurrency: number
  /** JOB_OWNER_CONCURRENCY: running jobs per owner across all replicas; 0 = no cap (SPEC §8). */
  jobOwnerConcurrency: number
  jobMaxAttempts: number
  jobLeaseSeconds: number
  workerUrl: string | undefined
  workerResultSeconds: number
  queueTimeoutSeconds: number
  jwtPrivateKey: string | undefined
  jwtKid: string | undefined
  jwtPreviousPublicKey: string | undefined
  jwtPreviousKid: string | undefined
  webhookSecrets: string[]
  publicTokenSecret: string | undefined
  wordpress: WordPressSecrets
  createCapability: string
  adminCapability: string
  rateLimitMax: number
  /** Visitor creates per client address per window (SPEC §8; IPv6 per /64). */
  rateLimitIpMax: number
  /** `AI_BUDGETS` (SPEC §8); undefined: no budgets. */
  budgets: BudgetsConfig | undefined
  rateLimitWindowSeconds: number
  dedupeWindowSeconds: number
  requestMaxBytes: number
  resultMaxBytes: number
  /** RESULT_INLINE_MAX_BYTES: larger results are stored outside the table (SPEC §12); at most resultMaxBytes. */
  resultInlineMaxBytes: number
  /** RESULT_STORE_DIR: where results over resultInlineMaxBytes are kept, shared by every replica. */
  resultStoreDir: string
  /** AI_ENCRYPTION_KEY: the key new rows are sealed with and every key older rows may name. */
  encryptionKeys: Keyring | undefined
  trustProxy: string[]
  webhookAllowedIps: string[]
  logLevel: string
  /** SIGTERM: how long running jobs may finish before they are released. */
  shutdownGraceSeconds: number
  /** AI_EVENTS_URL: terminal-state events are POSTed here (SPEC §10); undefined: events are off. */
  eventsUrl: string | undefined
  /**
   * AI_EVENTS_SECRET (SPEC §10, §12): the `whsec_` secret that signs events to WordPress and that
   * WordPress signs its privacy calls with. Required with eventsUrl; alone it turns on only the
   * signed privacy calls.
   */
  eventsSecret: string | undefined
  /** ARCHIVE_AFTER_DAYS (SPEC §12): the daily archive's cut-off in days; undefined: no daily archive. */
  archiveAfterDays: number | undefined
  /** ARCHIVE_DIR: where archive files are written (and erase rewrites them); default `./data/archive`. */
  archiveDir: string
}

export class ConfigError extends Error {
  constructor(readonly variable: string, problem: string) {
    super(`${variable}: ${problem}`)
    this.name = 'ConfigError'
  }
}

type Env = Record<string, string | undefined>

const WP_SECRET_NAMES = [
  'AUTH_KEY', 'AUTH_SALT', 'SECURE_AUTH_KEY', 'SECURE_AUTH_SALT',
  'LOGGED_IN_KEY', 'LOGGED_IN_SALT', 'NONCE_KEY', 'NONCE_SALT', 'SECRET_KEY', 'COOKIEHASH',
] as const

function intIn(source: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = source[name]
  if (raw === undefined || raw === '') return fallback
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(name, `must be a whole number, got "${raw}"`)
  const n = Number(raw)
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`)
  return n
}

function numberIn(source: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = source[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new ConfigError(name, `must be a number, got "${raw}"`)
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`)
  return n
}

function urlValue(source: Env, name: string, protocols: string[]): string | undefined {
  const raw = source[name]
  if (raw === undefined || raw === '') return undefined
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    throw new ConfigError(name, 'is not a valid URL')
  }
  if (!protocols.includes(u.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}`)
  return raw
}

function listValue(raw: string | undefined): string[] {
  return (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)
}

const CIDR = /^(?:(?:\d{1,3}\.){3}\d{1,3}(?:\/\d{1,2})?|[0-9a-fA-F:]+(?:\/\d{1,3})?)$/

function cidrList(source: Env, name: string): string[] {
  const raw = source[name]
  if (raw === undefined || raw === '' || raw === 'false') return []
  if (raw === 'true' || raw === '*') throw new ConfigError(name, 'must list proxy addresses or CIDRs, never a bare true')
  const list = listValue(raw)
  for (const item of list) if (!CIDR.test(item)) throw new ConfigError(name, `"${item}" is not an address or CIDR`)
  return list
}

function parseModels(raw: string | undefined): Record<string, ModelConfig> {
  if (raw === undefined || raw === '') return {}
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    throw new ConfigError('AI_MODELS', 'is not valid JSON')
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError('AI_MODELS', 'must be a JSON object from model name to settings')
  const models: Record<string, ModelConfig> = {}
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    const v = value as Record<string, unknown> | null
    if (!v || typeof v !== 'object') throw new ConfigError('AI_MODELS', `entry "${name}" must be an object`)
    if (!PROVIDERS.includes(v.provider as ProviderName)) throw new ConfigError('AI_MODELS', `entry "${name}" needs provider echo, openai or anthropic`)
    for (const key of ['max_tokens', 'delay_ms', 'delta_ms', 'fail_status', 'break_after', 'fail_times'] as const) {
      if (v[key] !== undefined && (typeof v[key] !== 'number' || !Number.isInteger(v[key]) || (v[key] as number) < 0)) {
        throw new ConfigError('AI_MODELS', `entry "${name}": ${key} must be a whole number`)
      }
    }
    for (const key of ['url', 'api_key'] as const) {
      if (v[key] !== undefined && typeof v[key] !== 'string') throw new ConfigError('AI_MODELS', `entry "${name}": ${key} must be a string`)
    }
    if (v.fail_status !== undefined && v.break_after !== undefined) {
      throw new ConfigError('AI_MODELS', `entry "${name}": fail_status and break_after are two ways to fail; set one`)
    }
    if (v.fallback !== undefined && (!Array.isArray(v.fallback) || v.fallback.some((m) => typeof m !== 'string' || m === ''))) {
      throw new ConfigError('AI_MODELS', `entry "${name}": fallback must be an array of model names`)
    }
    models[name] = v as unknown as ModelConfig
  }
  return models
}

/**
 * Fallback chains (SPEC §9): each name must be an allowed model (an `AI_MODELS` key or
 * `AI_DEFAULT_MODEL`) other than the entry itself, and following fallbacks from any model must
 * never come back to it (a cycle would make one failing attempt go round for ever).
 */
function checkFallbacks(models: Record<string, ModelConfig>, defaultModel: string): void {
  const allowed = new Set([...Object.keys(models), defaultModel])
  for (const [name, entry] of Object.entries(models)) {
    for (const next of entry.fallback ?? []) {
      if (next === name) throw new ConfigError('AI_MODELS', `entry "${name}": fallback names the model itself`)
      if (!allowed.has(next)) throw new ConfigError('AI_MODELS', `entry "${name}": fallback "${next}" is not an allowed model (the AI_MODELS keys and AI_DEFAULT_MODEL)`)
    }
  }
  // Depth-first search; `path` holds the models on the way, so meeting one of them again is a cycle.
  const done = new Set<string>()
  const visit = (name: string, path: string[]): void => {
    const at = path.indexOf(name)
    if (at >= 0) throw new ConfigError('AI_MODELS', `fallbacks form a cycle: ${[...path.slice(at), name].join(' → ')}`)
    if (done.has(name)) return
    for (const next of models[name]?.fallback ?? []) visit(next, [...path, name])
    done.add(name)
  }
  for (const name of Object.keys(models)) visit(name, [])
}

function budgetsFrom(raw: string | undefined): BudgetsConfig | undefined {
  try {
    return parseBudgets(raw)
  } catch (err) {
    if (err instanceof BudgetsConfigError) throw new ConfigError('AI_BUDGETS', err.message)
    throw err
  }
}

/** Standard Webhooks secrets are 24 to 64 random bytes; fewer than 16 is no secret. */
const EVENTS_SECRET_MIN_BYTES = 16

/**
 * AI_EVENTS_URL and AI_EVENTS_SECRET (SPEC §10) go together: one without the other stops
 * start-up, as a bad URL or a secret that is not `whsec_` + base64 does. The message names the
 * variable, never the secret's value.
 */
function eventsSettings(source: Env): { url: string | undefined; secret: string | undefined } {
  const url = urlValue(source, 'AI_EVENTS_URL', ['http:', 'https:'])
  const secret = source.AI_EVENTS_SECRET || undefined
  if (url && !secret) throw new ConfigError('AI_EVENTS_SECRET', 'is required when AI_EVENTS_URL is set')
  // The secret alone is fine: WordPress's signed privacy calls (SPEC §12) need only it.
  if (secret !== undefined) {
    const encoded = secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : undefined
    if (encoded === undefined) throw new ConfigError('AI_EVENTS_SECRET', 'must be a Standard Webhooks secret: whsec_ followed by base64')
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.replace(/=+$/, '').length % 4 === 1) {
      throw new ConfigError('AI_EVENTS_SECRET', 'must be base64 after the whsec_ prefix')
    }
    if (Buffer.from(encoded, 'base64').length < EVENTS_SECRET_MIN_BYTES) {
      throw new ConfigError('AI_EVENTS_SECRET', `must hold at least ${EVENTS_SECRET_MIN_BYTES} bytes after whsec_ (openssl rand -base64 32)`)
    }
  }
  return { url, secret }
}

/** Builds a mysql:// URL from wp-config's DB_* constants. */
function databaseUrlFromWpConfig(c: Record<string, unknown>): string {
  const name = String(c.DB_NAME ?? '')
  if (!name) throw new ConfigError('WP_CONFIG_PATH', 'wp-config.php defines no DB_NAME')
  let host: ReturnType<typeof parseDbHost>
  try {
    host = parseDbHost(String(c.DB_HOST ?? 'localhost'))
  } catch (err) {
    throw new ConfigError('DB_HOST', `in wp-config.php: ${(err as Error).message.replace(/^DB_HOST:\s*/, '')}`)
  }
  const user = encodeURIComponent(String(c.DB_USER ?? 'root'))
  const pass = c.DB_PASSWORD ? `:${encodeURIComponent(String(c.DB_PASSWORD))}` : ''
  const hostname = host.host && host.host !== 'localhost' ? host.host : '127.0.0.1'
  const base = `mysql://${user}${pass}@${hostname.includes(':') ? `[${hostname}]` : hostname}:${host.port ?? 3306}/${encodeURIComponent(name)}`
  // `localhost` without a port means the default socket to PHP's mysqli; we use TCP unless a socket is named.
  return host.socket ? `${base}?socket=${encodeURIComponent(host.socket)}` : base
}

function readWpConfig(path: string, env: Env): { constants: Record<string, unknown>; tablePrefix?: string } {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('WP_CONFIG_PATH', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  try {
    return parseWpConfig(text, env)
  } catch (err) {
    throw new ConfigError('WP_CONFIG_PATH', (err as Error).message)
  }
}

/**
 * Reads the configuration once: environment first, then wp-config.php (when WP_CONFIG_PATH is
 * set), then defaults. Throws a ConfigError naming the variable on the first bad value.
 */
export function loadConfig(env: Env = process.env): Readonly<Config> {
  const wpConfigPath = env.WP_CONFIG_PATH || undefined
  const wp = wpConfigPath ? readWpConfig(wpConfigPath, env) : { constants: {} as Record<string, unknown> }
  // One merged view: an environment variable wins over the same-named wp-config define.
  const fromWp: Env = {}
  for (const [k, v] of Object.entries(wp.constants)) {
    if (v !== null && v !== undefined && typeof v !== 'boolean') fromWp[k] = String(v)
    else if (typeof v === 'boolean') fromWp[k] = v ? 'true' : 'false'
  }
  const source: Env = { ...fromWp, ...Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== '')) }

  const embedded = !env.DATABASE_URL && !wpConfigPath
  const databaseUrl = env.DATABASE_URL || (wpConfigPath ? databaseUrlFromWpConfig(wp.constants) : 'sqlite:./data/ai-gateway.sqlite')
  if (!/^(mysql|mariadb):\/\//.test(databaseUrl) && !databaseUrl.startsWith('sqlite:')) {
    throw new ConfigError('DATABASE_URL', 'must be mysql://user:pass@host:3306/db or sqlite:PATH')
  }
  if (databaseUrl.startsWith('sqlite:') && databaseUrl.replace(/^sqlite:(\/\/)?/, '') === '') throw new ConfigError('DATABASE_URL', 'sqlite: needs a file path')
  if (/^(mysql|mariadb):\/\//.test(databaseUrl)) {
    try {
      const u = new URL(databaseUrl)
      if (!u.pathname.replace(/^\//, '')) throw new Error('no database name')
    } catch (err) {
      throw new ConfigError('DATABASE_URL', `is not a usable MySQL URL (${(err as Error).message})`)
    }
  }

  const tablePrefix = env.WP_TABLE_PREFIX || wp.tablePrefix || 'wp_'
  if (!/^[A-Za-z0-9_]+$/.test(tablePrefix)) throw new ConfigError('WP_TABLE_PREFIX', 'may contain only letters, digits and underscores')

  const port = intIn(source, 'PORT', 3000, 0, 65535)
  const host = source.HOST || '127.0.0.1'
  const publicUrlRaw = urlValue(source, 'PUBLIC_URL', ['http:', 'https:']) ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  const publicUrl = publicUrlRaw.replace(/\/+$/, '')
  const routePrefix = `${new URL(publicUrl).pathname.replace(/\/+$/, '')}/wp-json/ai/v1`

  const provider = (source.AI_PROVIDER || 'echo') as ProviderName
  if (!PROVIDERS.includes(provider)) throw new ConfigError('AI_PROVIDER', `must be echo, openai or anthropic, got "${provider}"`)
  const models = parseModels(source.AI_MODELS)
  const defaultModel = source.AI_DEFAULT_MODEL || (provider === 'echo' ? 'echo' : '')
  if (!defaultModel) throw new ConfigError('AI_DEFAULT_MODEL', `is required when AI_PROVIDER is ${provider}`)
  checkFallbacks(models, defaultModel)

  const workerUrl = urlValue(source, 'AI_WORKER_URL', ['http:', 'https:'])
  const webhookSecrets = listValue(source.AI_WEBHOOK_SECRET)
  for (const s of webhookSecrets) {
    if (s.startsWith('whsec_') && !/^whsec_[A-Za-z0-9+/]+={0,2}$/.test(s)) throw new ConfigError('AI_WEBHOOK_SECRET', 'a whsec_ entry must be base64 after the prefix')
  }
  // callback_url is built from PUBLIC_URL, never from a Host header: required even in the embedded default.
  if (workerUrl && !env.PUBLIC_URL && !fromWp.PUBLIC_URL) throw new ConfigError('PUBLIC_URL', 'is required when AI_WORKER_URL is set (callback_url is built from it)')
  if (workerUrl && !embedded) {
    if (webhookSecrets.length === 0) throw new ConfigError('AI_WEBHOOK_SECRET', 'is required when AI_WORKER_URL is set')
    if (!source.AI_JWT_PRIVATE_KEY) throw new ConfigError('AI_JWT_PRIVATE_KEY', 'is required when AI_WORKER_URL is set')
  }

  let encryptionKeys: Keyring | undefined
  if (source.AI_ENCRYPTION_KEY) {
    try {
      encryptionKeys = parseKeyring(source.AI_ENCRYPTION_KEY)
    } catch (err) {
      throw new ConfigError('AI_ENCRYPTION_KEY', (err as Error).message)
    }
  }

  const events = eventsSettings(source)
  const archiveAfterDays = source.ARCHIVE_AFTER_DAYS ? intIn(source, 'ARCHIVE_AFTER_DAYS', 0, 1, 36_500) : undefined

  const logLevel = source.LOG_LEVEL || 'info'
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', 'must be one of fatal, error, warn, info, debug, trace, silent')
  }

  const wordpress: WordPressSecrets = {}
  for (const name of WP_SECRET_NAMES) {
    const value = env[`WP_${name}`] ?? (wp.constants[name] as string | undefined)
    if (value !== undefined && value !== null) wordpress[name] = String(value)
  }

  const capability = (name: string, fallback: string): string => {
    const v = source[name] || fallback
    if (!/^[a-z0-9_-]+$/i.test(v)) throw new ConfigError(name, 'must be a WordPress capability name')
    return v
  }

  const resultMaxBytes = intIn(source, 'RESULT_MAX_BYTES', 262_144, 1024, 1024 * 1024 * 1024)
  const resultInlineMaxBytes = intIn(source, 'RESULT_INLINE_MAX_BYTES', Math.min(65_536, resultMaxBytes), 1024, 1024 * 1024 * 1024)
  if (resultInlineMaxBytes > resultMaxBytes) {
    throw new ConfigError('RESULT_INLINE_MAX_BYTES', `must be at most RESULT_MAX_BYTES (${resultMaxBytes}), got ${resultInlineMaxBytes}`)
  }
  const resultStoreDir = source.RESULT_STORE_DIR || './data/results'

  const config: Config = {
    port,
    host,
    databaseUrl,
    embedded,
    tablePrefix,
    wpConfigPath,
    redisUrl: urlValue(source, 'REDIS_URL', ['redis:', 'rediss:']),
    publicUrl,
    routePrefix,
    provider,
    providerUrl: urlValue(source, 'AI_PROVIDER_URL', ['http:', 'https:']),
    providerApiKey: source.AI_PROVIDER_API_KEY || undefined,
    defaultModel,
    models,
    maxTokens: intIn(source, 'AI_MAX_TOKENS', 4096, 1, 10_000_000),
    workerConcurrency: intIn(source, 'WORKER_CONCURRENCY', 8, 0, 1024),
    jobOwnerConcurrency: intIn(source, 'JOB_OWNER_CONCURRENCY', 4, 0, 100_000),
    jobMaxAttempts: intIn(source, 'JOB_MAX_ATTEMPTS', 3, 1, 100),
    jobLeaseSeconds: intIn(source, 'JOB_LEASE_SECONDS', 60, 5, 86_400),
    workerUrl,
    workerResultSeconds: intIn(source, 'AI_WORKER_RESULT_SECONDS', 300, 5, 86_400),
    queueTimeoutSeconds: numberIn(source, 'AI_QUEUE_TIMEOUT', 2, 0.05, 2),
    jwtPrivateKey: source.AI_JWT_PRIVATE_KEY?.replace(/\\n/g, '\n'),
    jwtKid: source.AI_JWT_KID || undefined,
    jwtPreviousPublicKey: source.AI_JWT_PREVIOUS_PUBLIC_KEY?.replace(/\\n/g, '\n'),
    jwtPreviousKid: source.AI_JWT_PREVIOUS_KID || undefined,
    webhookSecrets,
    publicTokenSecret: source.AI_PUBLIC_TOKEN_SECRET || undefined,
    wordpress,
    createCapability: capability('AI_CREATE_CAPABILITY', 'read'),
    adminCapability: capability('AI_ADMIN_CAPABILITY', 'manage_options'),
    rateLimitMax: intIn(source, 'RATE_LIMIT_MAX', 60, 0, 1_000_000_000),
    rateLimitIpMax: intIn(source, 'RATE_LIMIT_IP_MAX', 120, 0, 1_000_000_000),
    budgets: budgetsFrom(source.AI_BUDGETS),
    rateLimitWindowSeconds: intIn(source, 'RATE_LIMIT_WINDOW_SECONDS', 600, 1, 86_400 * 30),
    dedupeWindowSeconds: intIn(source, 'DEDUPE_WINDOW_SECONDS', 60, 0, 86_400),
    requestMaxBytes: intIn(source, 'REQUEST_MAX_BYTES', 65_536, 1024, 64 * 1024 * 1024),
    resultMaxBytes,
    resultInlineMaxBytes,
    resultStoreDir,
    encryptionKeys,
    trustProxy: cidrList(source, 'TRUST_PROXY'),
    webhookAllowedIps: cidrList(source, 'WEBHOOK_ALLOWED_IPS'),
    logLevel,
    shutdownGraceSeconds: intIn(source, 'SHUTDOWN_GRACE_SECONDS', 20, 0, 3600),
    eventsUrl: events.url,
    eventsSecret: events.secret,
    archiveAfterDays,
    archiveDir: source.ARCHIVE_DIR || './data/archive',
  }
  return Object.freeze(config)
}
