import { apiKeyTenant, type Tenant } from '../db/api-keys.ts'
import type { Sql } from '../db/client.ts'
import { unauthorized } from './problem.ts'
import type { StreamClaims, StreamTokens } from './stream-tokens.ts'

export interface Authenticator {
  /** The tenant of `Authorization: Bearer KEY`; throws a 401 problem. */
  bearer(authorization: string | undefined): Promise<Tenant>
  /**
   * For SSE routes: the bearer key if one is sent, else the `token` query parameter (a browser
   * EventSource cannot send headers). Returns the tenant id and, for a task token, its task.
   */
  stream(authorization: string | undefined, token: string | undefined): Promise<StreamClaims>
}

const cacheSeconds = 60
const cacheLimit = 10_000

/** Key lookups are cached for a minute, so a busy client costs one query a minute, not one a request. */
export function createAuthenticator(sql: Sql, tokens: StreamTokens): Authenticator {
  const cache = new Map<string, { tenant: Tenant; until: number }>()

  async function bearer(authorization: string | undefined): Promise<Tenant> {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '')
    if (!match) throw unauthorized('send an API key: Authorization: Bearer KEY')
    const key = match[1]!
    const cached = cache.get(key)
    if (cached && cached.until > Date.now()) return cached.tenant
    const tenant = await apiKeyTenant(sql, key)
    if (!tenant) throw unauthorized('the API key is not valid')
    if (cache.size >= cacheLimit) cache.clear()
    cache.set(key, { tenant, until: Date.now() + cacheSeconds * 1000 })
    return tenant
  }

  return {
    bearer,
    async stream(authorization, token) {
      if (authorization !== undefined || token === undefined) {
        return { tenantId: (await bearer(authorization)).id, taskId: null }
      }
      const claims = tokens.verify(token)
      if (!claims) throw unauthorized('the stream token is not valid or has expired')
      return claims
    },
  }
}
