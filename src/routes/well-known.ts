import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { buildJwks } from '../dispatch/jwt.js'

/** A public key: EC P-256 (`crv`, `x`, `y`) or RSA (`n`, `e`), never a private part. */
const Jwk = Type.Object({
  kty: Type.String(), kid: Type.String(), alg: Type.String(), use: Type.String(),
  crv: Type.Optional(Type.String()), x: Type.Optional(Type.String()), y: Type.Optional(Type.String()),
  n: Type.Optional(Type.String()), e: Type.Optional(Type.String()),
}, { additionalProperties: false })

/** `GET /.well-known/jwks.json`: the dispatch-signing public key, and the previous one during a rotation. */
export async function wellKnownRoutes(app: FastifyInstance): Promise<void> {
  app.get('/.well-known/jwks.json', {
    config: { auth: 'none' },
    schema: {
      summary: 'The public keys that sign dispatch JWTs', tags: ['workers'],
      response: { 200: Type.Object({ keys: Type.Array(Jwk) }) },
    },
  }, async (_request, reply) => {
    reply.header('Cache-Control', 'public, max-age=300')
    return app.signingKey ? buildJwks(app.signingKey) : { keys: [] }
  })
}
