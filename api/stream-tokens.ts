import { timingSafeEqual } from 'node:crypto'
import * as v from 'valibot'

/** What a stream token grants: read access to one task's stream, or to the tenant's whole stream. */
export interface StreamClaims {
  tenantId: string
  taskId: string | null
}

export interface StreamTokens {
  sign(claims: StreamClaims, ttlSeconds?: number): { token: string; expiresAt: Date }
  verify(token: string): StreamClaims | undefined
}

const Payload = v.object({ tn: v.string(), tk: v.nullable(v.string()), exp: v.number() })

/**
 * Signed, read-only stream tokens: base64url(JSON claims) "." base64url(HMAC-SHA256). They let a
 * browser EventSource, which cannot send an Authorization header, open a stream.
 */
export function createStreamTokens(secret: string, now = () => Date.now()): StreamTokens {
  const keyed = new Bun.CryptoHasher('sha256', secret) // copied for each use: the key is set up once
  const mac = (data: string) => keyed.copy().update(data).digest()
  return {
    sign({ tenantId, taskId }, ttlSeconds = 3600) {
      const exp = Math.floor(now() / 1000) + ttlSeconds
      const payload = Buffer.from(JSON.stringify({ tn: tenantId, tk: taskId, exp })).toString('base64url')
      return { token: `${payload}.${mac(payload).toString('base64url')}`, expiresAt: new Date(exp * 1000) }
    },
    verify(token) {
      const [payload, signature, ...rest] = token.split('.')
      if (!payload || !signature || rest.length > 0) return undefined
      const expected = mac(payload)
      const given = Buffer.from(signature, 'base64url')
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
      let claims: v.InferOutput<typeof Payload>
      try {
        claims = v.parse(Payload, JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')))
      } catch {
        return undefined
      }
      if (claims.exp * 1000 <= now()) return undefined
      return { tenantId: claims.tn, taskId: claims.tk }
    },
  }
}
