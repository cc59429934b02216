/** Who a request acts for, whichever method authenticated it. */
export interface Principal {
  method: 'cookie' | 'application_password' | 'token'
  /** The WordPress user id; 0 for an anonymous visitor with a signed token. */
  userId: number
  /** `u:<user_id>` or, for anonymous visitors, `s:<sid>`: jobs and idempotency keys are scoped by it. */
  ownerKey: string
  /** May create jobs (AI_CREATE_CAPABILITY for WordPress users; any valid public token). */
  canCreate: boolean
  /** Holds AI_ADMIN_CAPABILITY: reads any job and uses the admin routes. Never true for a token. */
  isAdmin: boolean
}

export function userOwnerKey(userId: number): string {
  return `u:${userId}`
}
