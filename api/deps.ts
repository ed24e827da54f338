import type { Sql } from '../db/client.ts'
import type { Logger } from '../observability/log.ts'
import type { Authenticator } from './auth.ts'
import type { EventHub } from './hub.ts'
import type { ApiMetrics } from './metrics.ts'
import type { StreamTokens } from './stream-tokens.ts'

/** What the routes are built from; main.ts wires the real ones, tests may wire their own. */
export interface AppDeps {
  sql: Sql
  /** Submissions' inserts: pools of one connection each, without synchronous commit (see taskInserter). */
  insertConnections: Sql[]
  hub: EventHub
  auth: Authenticator
  tokens: StreamTokens
  log: Logger
  /** The schema version this code needs; /readyz compares it with the database's. */
  schemaVersion: number
  maxPayloadBytes: number
  ssePingMs: number
  metrics: ApiMetrics
  /** This process's metrics in the Prometheus text format. */
  metricsText: () => Promise<string>
  /** TASKCAST_TRACE_URL: the dashboard links a trace id here, with {traceId} replaced. */
  traceUrl?: string
}
