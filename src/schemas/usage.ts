import Type from 'typebox'

/** One budget window as it stands (SPEC §8: `data.budget` of a refusal, and each entry of `GET /usage`). */
export const BudgetStanding = Type.Object({
  scope: Type.String({ description: 'user:<id>, role:<name>, default, anonymous or site' }),
  window: Type.Union([Type.Literal('day'), Type.Literal('month')]),
  limit: Type.Integer({ minimum: 0 }),
  used: Type.Integer({ minimum: 0 }),
  reserved: Type.Integer({ minimum: 0 }),
  resets_at: Type.String({ description: 'ISO-8601 UTC: when the window starts over' }),
})

export const UsageResponse = Type.Object({
  windows: Type.Array(BudgetStanding),
})
