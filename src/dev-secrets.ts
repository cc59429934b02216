import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Config } from './config.js'

interface DevSecrets {
  publicTokenSecret: string
  webhookSecret: string
  jwtPrivateKey?: string
}

/**
 * The embedded default only (SPEC §2): secrets nobody configured are generated once and kept
 * beside the SQLite file (mode 0600), so a restart keeps issued dev tokens valid. Anywhere else a
 * missing secret turns its feature off instead.
 */
export function withDevSecrets(config: Readonly<Config>, generateJwtKey: () => string): Readonly<Config> {
  if (!config.embedded) return config
  const dbPath = config.databaseUrl.replace(/^sqlite:(\/\/)?/, '')
  const file = `${dirname(dbPath)}/dev-secrets.json`
  let saved: Partial<DevSecrets> = {}
  if (existsSync(file)) {
    try {
      saved = JSON.parse(readFileSync(file, 'utf8')) as Partial<DevSecrets>
    } catch {
      saved = {}
    }
  }
  const secrets: DevSecrets = {
    publicTokenSecret: saved.publicTokenSecret ?? randomBytes(32).toString('base64url'),
    webhookSecret: saved.webhookSecret ?? `whsec_${randomBytes(24).toString('base64')}`,
    jwtPrivateKey: saved.jwtPrivateKey ?? generateJwtKey(),
  }
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 })
  chmodSync(file, 0o600)
  return Object.freeze({
    ...config,
    publicTokenSecret: config.publicTokenSecret ?? secrets.publicTokenSecret,
    webhookSecrets: config.webhookSecrets.length > 0 ? config.webhookSecrets : [secrets.webhookSecret],
    jwtPrivateKey: config.jwtPrivateKey ?? secrets.jwtPrivateKey,
  })
}
