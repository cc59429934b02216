import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { SignJWT } from 'jose'
import mysql from 'mysql2/promise'
import { buildApp, type AppDeps } from '../src/app.js'
import type { Clock } from '../src/clock.js'
import { loadConfig, type Config } from '../src/config.js'

/** MariaDB/MySQL for tests: the machine's server unless TEST_MYSQL_URL says otherwise. No skip: unreachable fails. */
export const MYSQL_BASE = (process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306').replace(/\/+$/, '')
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const TOKEN_SECRET = 'test-public-token-secret-0123456789abcdef'

export type Dialect = 'sqlite' | 'mysql'
export const DIALECTS: Dialect[] = ['sqlite', 'mysql']

/** A fresh, empty MariaDB database for one test file; returns its URL. */
export async function freshMysqlDatabase(name: string): Promise<string> {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`bad test database name ${name}`)
  const conn = await mysql.createConnection(`${MYSQL_BASE}/`)
  try {
    await conn.query(`DROP DATABASE IF EXISTS \`${name}\``)
    await conn.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_520_ci`)
  } finally {
    await conn.end()
  }
  return `${MYSQL_BASE}/${name}`
}

export async function dropMysqlDatabase(name: string): Promise<void> {
  const conn = await mysql.createConnection(`${MYSQL_BASE}/`)
  try {
    await conn.query(`DROP DATABASE IF EXISTS \`${name}\``)
  } finally {
    await conn.end()
  }
}

/** A fresh database URL of either dialect; `cleanup` removes it. */
export async function freshDatabase(dialect: Dialect, name: string): Promise<{ url: string; cleanup: () => Promise<void> }> {
  if (dialect === 'mysql') {
    const url = await freshMysqlDatabase(name)
    return { url, cleanup: () => dropMysqlDatabase(name) }
  }
  const dir = mkdtempSync(join(tmpdir(), `${name}-`))
  return { url: `sqlite:${join(dir, 'gateway.sqlite')}`, cleanup: async () => rmSync(dir, { recursive: true, force: true }) }
}

export function testConfig(env: Record<string, string | undefined>): Readonly<Config> {
  return loadConfig({ AI_PUBLIC_TOKEN_SECRET: TOKEN_SECRET, LOG_LEVEL: 'silent', ...env })
}

export interface TestApp {
  app: FastifyInstance
  config: Readonly<Config>
  close(): Promise<void>
}

/** Builds the app on a fresh database of the given dialect (pool not started unless asked). */
export async function buildTestApp(options: {
  dialect: Dialect
  name: string
  env?: Record<string, string | undefined>
  clock?: Clock
  deps?: Partial<AppDeps>
  /** Runs on the fresh database before the app is built (WordPress tables, for instance, turn its logins on). */
  prepare?: (url: string) => Promise<void>
}): Promise<TestApp> {
  const db = await freshDatabase(options.dialect, options.name)
  try {
    await options.prepare?.(db.url)
  } catch (err) {
    await db.cleanup()
    throw err
  }
  const config = testConfig({ DATABASE_URL: db.url, ...options.env })
  const app = await buildApp(config, { logger: false, startWorkers: false, ...(options.clock ? { clock: options.clock } : {}), ...options.deps })
  return {
    app,
    config,
    close: async () => {
      await app.close()
      await db.cleanup()
    },
  }
}

/** A signed public token as the WordPress companion issues them. */
export async function signToken(claims: Record<string, unknown>, options: { secret?: string; nowMs?: number; ttlSeconds?: number; alg?: 'HS256' | 'HS384' } = {}): Promise<string> {
  const now = Math.floor((options.nowMs ?? Date.now()) / 1000)
  return new SignJWT({ iat: now, exp: now + (options.ttlSeconds ?? 3600), ...claims })
    .setProtectedHeader({ alg: options.alg ?? 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(options.secret ?? TOKEN_SECRET))
}

export async function bearer(claims: Record<string, unknown>, options?: Parameters<typeof signToken>[1]): Promise<Record<string, string>> {
  return { authorization: `Bearer ${await signToken(claims, options)}` }
}

/** Polls until `check` returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}
