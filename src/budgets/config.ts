/**
 * `AI_BUDGETS` (SPEC §8): token limits per user, role, visitors and the whole site, per UTC day
 * and month. Parsed and validated once, at start-up, with config.ts.
 */

export type BudgetWindow = 'day' | 'month'
export const BUDGET_WINDOWS: readonly BudgetWindow[] = ['day', 'month']

/** A scope's limits; a window it does not name is unlimited. */
export interface WindowLimits {
  tokens_per_day?: number
  tokens_per_month?: number
}

/** `null` means unlimited (e.g. `"administrator": null`). */
export type Limits = WindowLimits | null

export interface BudgetsConfig {
  default?: Limits
  anonymous?: Limits
  roles: Record<string, Limits>
  users: Record<string, Limits>
  site?: Limits
}

export class BudgetsConfigError extends Error {}

const LIMIT_KEYS = ['tokens_per_day', 'tokens_per_month'] as const

function parseLimits(value: unknown, where: string): Limits {
  if (value === null) return null
  if (typeof value !== 'object' || Array.isArray(value)) throw new BudgetsConfigError(`${where} must be an object with tokens_per_day and/or tokens_per_month, or null`)
  const limits: WindowLimits = {}
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (!(LIMIT_KEYS as readonly string[]).includes(key)) throw new BudgetsConfigError(`${where}: unknown key "${key}" (use tokens_per_day, tokens_per_month)`)
    if (v === null) continue
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new BudgetsConfigError(`${where}.${key} must be a whole number of tokens`)
    limits[key as (typeof LIMIT_KEYS)[number]] = v
  }
  return limits
}

function parseMap(value: unknown, where: string, keyPattern: RegExp, keyWhat: string): Record<string, Limits> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new BudgetsConfigError(`${where} must be an object`)
  const out: Record<string, Limits> = {}
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    if (!keyPattern.test(key)) throw new BudgetsConfigError(`${where}: "${key}" is not ${keyWhat}`)
    out[key] = parseLimits(v, `${where}.${key}`)
  }
  return out
}

/** Parses `AI_BUDGETS`; undefined when unset (no budgets). Throws naming the part that is wrong. */
export function parseBudgets(raw: string | undefined): BudgetsConfig | undefined {
  if (raw === undefined || raw.trim() === '') return undefined
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    throw new BudgetsConfigError('is not valid JSON')
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new BudgetsConfigError('must be a JSON object')
  const p = parsed as Record<string, unknown>
  for (const key of Object.keys(p)) {
    if (!['default', 'anonymous', 'roles', 'users', 'site'].includes(key)) throw new BudgetsConfigError(`unknown key "${key}" (use default, anonymous, roles, users, site)`)
  }
  const config: BudgetsConfig = {
    roles: parseMap(p.roles, 'roles', /^[a-z0-9_-]+$/i, 'a role name'),
    users: parseMap(p.users, 'users', /^[1-9]\d{0,18}$/, 'a WordPress user id'),
  }
  for (const key of ['default', 'anonymous', 'site'] as const) {
    if (p[key] !== undefined) config[key] = parseLimits(p[key], key)
  }
  return config
}

/** One window's limit for one scope: whom it counts (`owner` or the whole site) and how much. */
export interface BudgetLimit {
  /** `user:42`, `role:subscriber`, `default`, `anonymous` or `site` (SPEC §8 `data.budget.scope`). */
  scope: string
  window: BudgetWindow
  limit: number
  /** Counted per owner (each user, each visitor on their own) or for everyone together. */
  per: 'owner' | 'site'
}

function limitOf(limits: Limits | undefined, window: BudgetWindow): number | undefined {
  if (limits === undefined || limits === null) return undefined
  return window === 'day' ? limits.tokens_per_day : limits.tokens_per_month
}

/**
 * The limits that hold for one owner (SPEC §8): a user's come from `users`, else from the most
 * generous of their roles, compared window by window (a role that names no limit for a window, or
 * is `null`, makes that window unlimited), else from `default`. Visitors use `anonymous`, or
 * `default` when it is absent, each `sid` on its own. `site` caps everyone together.
 */
export function limitsFor(config: BudgetsConfig, owner: { userId: number; roles?: readonly string[] }): BudgetLimit[] {
  const out: BudgetLimit[] = []
  for (const window of BUDGET_WINDOWS) {
    if (owner.userId === 0) {
      const scope = config.anonymous !== undefined ? 'anonymous' : 'default'
      const limit = limitOf(scope === 'anonymous' ? config.anonymous : config.default, window)
      if (limit !== undefined) out.push({ scope, window, limit, per: 'owner' })
    } else if (Object.hasOwn(config.users, String(owner.userId))) {
      const limit = limitOf(config.users[String(owner.userId)], window)
      if (limit !== undefined) out.push({ scope: `user:${owner.userId}`, window, limit, per: 'owner' })
    } else {
      const roles = (owner.roles ?? []).filter((role) => Object.hasOwn(config.roles, role))
      if (roles.length > 0) {
        let best: { role: string; limit: number } | undefined
        let unlimited = false
        for (const role of roles) {
          const limit = limitOf(config.roles[role], window)
          if (limit === undefined) unlimited = true
          else if (!best || limit > best.limit) best = { role, limit }
        }
        if (!unlimited && best) out.push({ scope: `role:${best.role}`, window, limit: best.limit, per: 'owner' })
      } else {
        const limit = limitOf(config.default, window)
        if (limit !== undefined) out.push({ scope: 'default', window, limit, per: 'owner' })
      }
    }
    const site = limitOf(config.site, window)
    if (site !== undefined) out.push({ scope: 'site', window, limit: site, per: 'site' })
  }
  return out
}
