/** Who a request acts for, whichever method authenticated it. */
export interface Principal {
  /** `signed`: a server-to-server call signed with AI_EVENTS_SECRET (src/auth/signed-request.ts). */
  method: 'cookie' | 'application_password' | 'token' | 'signed'
  /** The WordPress user id; 0 for an anonymous visitor with a signed token. */
  userId: number
  /** `u:<user_id>` or, for anonymous visitors, `s:<sid>`: jobs and idempotency keys are scoped by it. */
  ownerKey: string
  /** May create jobs (AI_CREATE_CAPABILITY for WordPress users, and for tokens of WordPress users). */
  canCreate: boolean
  /** Holds AI_ADMIN_CAPABILITY: reads any job and uses the admin routes. Never true for a token. */
  isAdmin: boolean
  /** The WordPress user's roles, where they are known (budgets follow them, SPEC §8). */
  roles?: readonly string[]
  /**
   * The same principal with its capabilities read again past every cache. A check that is about
   * to refuse calls it first: caches may delay a revocation, never a grant (SPEC §5).
   */
  recheck?: () => Promise<Principal>
}

export function userOwnerKey(userId: number): string {
  return `u:${userId}`
}
