import { Elysia } from 'elysia'
import type { Sql } from '../db/client.ts'
import { createListener } from '../db/listener.ts'
import { latestVersion } from '../db/migrate.ts'
import type { Logger } from '../observability/log.ts'
import { createAuthenticator } from './auth.ts'
import { parseJsonBody } from './body.ts'
import { dashboardRoutes } from './dashboard.ts'
import type { AppDeps } from './deps.ts'
import { eventRoutes } from './events.ts'
import { healthRoutes } from './health.ts'
import { createApiMetrics } from './metrics.ts'
import { createEventHub } from './hub.ts'
import { apiDocs } from './openapi.ts'
import { problemHandler } from './problem.ts'
import { requestTracing } from './request-tracing.ts'
import { createStreamTokens } from './stream-tokens.ts'
import { taskRoutes } from './tasks.ts'

/** The HTTP API, built from its dependencies; it listens only when main.ts says so. */
export function createApp(deps: AppDeps) {
  return new Elysia({
    // Bun refuses bodies past this on its own (a bare 413); below it, parseJsonBody answers with
    // a problem+json 413 at TASKCAST_MAX_PAYLOAD_BYTES.
    serve: { maxRequestBodySize: deps.maxPayloadBytes * 4 + 65_536 },
  })
    .use(requestTracing)
    .onParse({ as: 'global' }, parseJsonBody(deps.maxPayloadBytes))
    .onError({ as: 'global' }, problemHandler(deps.log))
    .use(healthRoutes(deps))
    .use(taskRoutes(deps))
    .use(eventRoutes(deps))
    .use(apiDocs())
    .use(dashboardRoutes(deps))
}

export type App = ReturnType<typeof createApp>

export interface ApiOptions {
  sql: Sql
  /** For submissions' inserts: pools of one connection each, without synchronous commit (see taskInserter). */
  insertConnections: Sql[]
  databaseUrl: string
  log: Logger
  streamSecret: string
  maxPayloadBytes: number
  ssePingMs: number
  listenHealthMs: number
  /** application_name of the LISTEN connection. */
  listenerName?: string
  metricsText: () => Promise<string>
  /** TASKCAST_TRACE_URL, for the dashboard's trace links. */
  traceUrl?: string
}

/**
 * The API with what it runs on: its one LISTEN connection and the hub that fans events out, the
 * stream tokens and the authenticator. main.ts runs it; tests run exactly the same assembly.
 * Nothing connects until `listener.start()`, nothing listens until `app.listen()`.
 */
export function assembleApi(options: ApiOptions) {
  const { sql, log } = options
  const listener = createListener({
    url: options.databaseUrl,
    applicationName: options.listenerName ?? 'taskcast-api-listen',
    log,
    healthCheckMs: options.listenHealthMs,
  })
  const hub = createEventHub(listener, log)
  const tokens = createStreamTokens(options.streamSecret)
  const metrics = createApiMetrics({ sql, hub, listener, log })
  const app = createApp({
    sql,
    insertConnections: options.insertConnections,
    hub,
    tokens,
    auth: createAuthenticator(sql, tokens),
    log,
    schemaVersion: latestVersion(),
    maxPayloadBytes: options.maxPayloadBytes,
    ssePingMs: options.ssePingMs,
    metrics,
    metricsText: options.metricsText,
    traceUrl: options.traceUrl,
  })
  return { app, hub, listener, tokens, metrics }
}
