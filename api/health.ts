import { Elysia } from 'elysia'
import { migrationsApplied } from '../db/migrate.ts'
import type { AppDeps } from './deps.ts'
import { unavailable } from './problem.ts'

const readyTimeoutMs = 3000

export function healthRoutes({ sql, hub, schemaVersion, metricsText }: AppDeps) {
  return new Elysia()
    .get('/healthz', () => ({ status: 'ok' }))
    .get('/metrics', async () => new Response(await metricsText(), {
      headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' },
    }))
    .get('/readyz', async () => {
      const timeout = Bun.sleep(readyTimeoutMs).then(() => 'timeout' as const)
      const applied = await Promise.race([migrationsApplied(sql), timeout]).catch(() => 'unreachable' as const)
      if (applied === 'timeout' || applied === 'unreachable') throw unavailable('the database does not answer')
      if (applied < schemaVersion) {
        throw unavailable(`the database schema is at version ${applied}, this code needs ${schemaVersion}: run bun run migrate`)
      }
      if (!hub.connected) throw unavailable('the LISTEN connection for live events is not up yet')
      return { status: 'ready', schemaVersion: applied }
    })
}
