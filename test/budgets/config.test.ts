import { describe, expect, it } from 'vitest'
import { limitsFor, parseBudgets } from '../../src/budgets/config.js'
import { periodOf } from '../../src/budgets/budgets.js'
import { loadConfig } from '../../src/config.js'

const SPEC_EXAMPLE = {
  default: { tokens_per_day: 200000, tokens_per_month: 3000000 },
  anonymous: { tokens_per_day: 20000 },
  roles: { subscriber: { tokens_per_day: 50000 }, administrator: null },
  users: { 42: { tokens_per_month: 10000000 } },
  site: { tokens_per_month: 50000000 },
}

describe('AI_BUDGETS', () => {
  const config = parseBudgets(JSON.stringify(SPEC_EXAMPLE))!

  it('reads the SPEC §8 example', () => {
    expect(config.default).toEqual({ tokens_per_day: 200000, tokens_per_month: 3000000 })
    expect(config.roles.administrator).toBeNull()
    expect(config.users['42']).toEqual({ tokens_per_month: 10000000 })
    expect(parseBudgets(undefined)).toBeUndefined()
  })

  it.each([
    ['not JSON', '{', /valid JSON/],
    ['an unknown scope', '{"everyone":{}}', /unknown key "everyone"/],
    ['an unknown window', '{"default":{"tokens_per_hour":1}}', /tokens_per_hour/],
    ['a negative limit', '{"default":{"tokens_per_day":-1}}', /whole number/],
    ['a fraction', '{"site":{"tokens_per_month":1.5}}', /whole number/],
    ['a user that is no id', '{"users":{"bob":{}}}', /"bob" is not a WordPress user id/],
    ['a role with a space', '{"roles":{"shop manager":{}}}', /not a role name/],
    ['limits that are a number', '{"anonymous":5}', /must be an object/],
  ])('refuses %s with one line naming AI_BUDGETS', (_name, raw, message) => {
    expect(() => loadConfig({ AI_BUDGETS: raw, LOG_LEVEL: 'silent' })).toThrow(message)
    try {
      loadConfig({ AI_BUDGETS: raw })
    } catch (err) {
      expect((err as Error).message).toMatch(/^AI_BUDGETS: /)
      expect((err as Error).message).not.toContain('\n')
    }
  })

  it('takes a user\'s own limits first, window by window', () => {
    expect(limitsFor(config, { userId: 42, roles: ['subscriber'] })).toEqual([
      { scope: 'user:42', window: 'month', limit: 10000000, per: 'owner' },
      { scope: 'site', window: 'month', limit: 50000000, per: 'site' },
    ])
  })

  it('takes the most generous role, window by window; a role with no limit makes the window unlimited', () => {
    const roles = parseBudgets(JSON.stringify({
      default: { tokens_per_day: 1 },
      roles: { author: { tokens_per_day: 10, tokens_per_month: 500 }, editor: { tokens_per_day: 30 }, administrator: null },
    }))!
    // editor names no month: unlimited wins for the month; the day is the larger of 10 and 30.
    expect(limitsFor(roles, { userId: 5, roles: ['author', 'editor'] })).toEqual([{ scope: 'role:editor', window: 'day', limit: 30, per: 'owner' }])
    expect(limitsFor(roles, { userId: 5, roles: ['author'] })).toEqual([
      { scope: 'role:author', window: 'day', limit: 10, per: 'owner' },
      { scope: 'role:author', window: 'month', limit: 500, per: 'owner' },
    ])
    expect(limitsFor(roles, { userId: 1, roles: ['administrator', 'author'] })).toEqual([])
    // No configured role: the default.
    expect(limitsFor(roles, { userId: 7, roles: ['contributor'] })).toEqual([{ scope: 'default', window: 'day', limit: 1, per: 'owner' }])
  })

  it('gives visitors the anonymous limits, or the default ones when there are none', () => {
    expect(limitsFor(config, { userId: 0 })).toEqual([
      { scope: 'anonymous', window: 'day', limit: 20000, per: 'owner' },
      { scope: 'site', window: 'month', limit: 50000000, per: 'site' },
    ])
    const noAnonymous = parseBudgets('{"default":{"tokens_per_day":9}}')!
    expect(limitsFor(noAnonymous, { userId: 0 })).toEqual([{ scope: 'default', window: 'day', limit: 9, per: 'owner' }])
  })

  it('counts days and months in UTC', () => {
    const t = Date.parse('2026-12-31T23:59:59.999Z')
    expect(periodOf('day', t)).toEqual({ period: '2026-12-31', startMs: Date.parse('2026-12-31T00:00:00Z'), endMs: Date.parse('2027-01-01T00:00:00Z') })
    expect(periodOf('month', t)).toEqual({ period: '2026-12', startMs: Date.parse('2026-12-01T00:00:00Z'), endMs: Date.parse('2027-01-01T00:00:00Z') })
    expect(periodOf('month', Date.parse('2028-02-29T12:00:00Z')).endMs).toBe(Date.parse('2028-03-01T00:00:00Z'))
  })
})
