import { hostname } from 'node:os'
import * as v from 'valibot'
import { createSql } from '../db/client.ts'
import { createNotifier, notifyAfterCommit } from '../db/notify.ts'
import { QueueName } from '../db/contracts.ts'
import { env, parseEnv } from '../db/env.ts'
import { createListener } from '../db/listener.ts'
import { onStopSignal, stopInOrder } from '../lifecycle/signals.ts'
import { createLogger } from '../observability/log.ts'
import { traceSql } from '../observability/sql-tracing.ts'
import { initTelemetry } from '../observability/telemetry.ts'
import { createWorker } from './loop.ts'

const Env = v.object({
  DATABASE_URL: env.databaseUrl,
  WORKER_CONCURRENCY: env.int(10, 1, 1000),
  /** Most tasks claimed ahead of free slots (adapted to the handlers' pace); unset: 4 × WORKER_CONCURRENCY. */
  WORKER_PREFETCH: v.optional(env.int(0, 0, 1000), undefined),
  WORKER_QUEUES: v.optional(
    v.pipe(v.string(), v.transform((s) => s.split(',').map((q) => q.trim()).filter(Boolean)), v.array(QueueName), v.minLength(1, 'name at least one queue')),
    'default',
  ),
  TASKCAST_LEASE_SECONDS: env.int(30, 1, 86_400),
  TASKCAST_SHUTDOWN_GRACE_SECONDS: env.number(30, 0, 86_400),
  TASKCAST_POLL_MS: env.int(1000, 10, 60_000),
  /** Days a finished task (and its events) is kept; 0 keeps them for good. */
  TASKCAST_RETENTION_DAYS: env.number(7, 0, 36_500),
  TASKCAST_LISTEN_HEALTH_SECONDS: env.number(10, 0.5, 3600),
  TASKCAST_TRACE_MODE: v.optional(v.picklist(['child', 'link'], 'must be child or link'), 'child'),
  /** Serve this worker's metrics at http://0.0.0.0:PORT/metrics; unset: not served. */
  WORKER_METRICS_PORT: v.optional(v.pipe(v.string(), v.regex(/^\d{1,5}$/, 'must be a port number'), v.transform(Number))),
  OTEL_SERVICE_NAME: v.optional(v.string(), 'taskcast-worker'),
})

const config = parseEnv(Env)
// Metrics are recorded only when something can read them.
const telemetry = initTelemetry('taskcast-worker', process.env, { metrics: config.WORKER_METRICS_PORT !== undefined })
const workerId = `${hostname()}:${process.pid}:${crypto.randomUUID().slice(0, 8)}`
const log = createLogger(config.OTEL_SERVICE_NAME).child({ workerId })

const notifier = createNotifier({ url: config.DATABASE_URL, applicationName: 'taskcast-worker-notify', log })
// Every statement a worker makes finds its rows through an index (see SqlOptions.noTableScans).
const sql = notifyAfterCommit(
  traceSql(createSql(config.DATABASE_URL, {
    max: Math.min(config.WORKER_CONCURRENCY + 2, 20), applicationName: 'taskcast-worker', noTableScans: true,
  })),
  notifier,
)
// Claims need not wait for their commit to reach disk: one lost in a crash leaves its task queued.
// Their one plan (tests EXPLAIN it) is kept rather than made again at every claim.
const claimSql = notifyAfterCommit(
  traceSql(createSql(config.DATABASE_URL, {
    max: 1, applicationName: 'taskcast-worker-claim', synchronousCommit: false, noTableScans: true, genericPlans: true,
  })),
  notifier,
)
// Holds the lock that says this worker is alive, so that submissions may hand it tasks.
const lockSql = createSql(config.DATABASE_URL, { max: 1, applicationName: 'taskcast-worker-alive', keepConnections: true })
const listener = createListener({
  url: config.DATABASE_URL,
  applicationName: 'taskcast-worker-listen',
  log,
  healthCheckMs: config.TASKCAST_LISTEN_HEALTH_SECONDS * 1000,
})
const worker = createWorker({
  sql,
  claimSql,
  lockSql,
  listener,
  log,
  workerId,
  queues: config.WORKER_QUEUES,
  concurrency: config.WORKER_CONCURRENCY,
  prefetch: config.WORKER_PREFETCH,
  leaseSeconds: config.TASKCAST_LEASE_SECONDS,
  retentionSeconds: config.TASKCAST_RETENTION_DAYS * 86_400,
  pollMs: config.TASKCAST_POLL_MS,
  traceMode: config.TASKCAST_TRACE_MODE,
})

const metricsServer = config.WORKER_METRICS_PORT === undefined ? undefined : Bun.serve({
  port: config.WORKER_METRICS_PORT,
  async fetch(request) {
    if (new URL(request.url).pathname !== '/metrics') return new Response('not found', { status: 404 })
    return new Response(await telemetry.metricsText(), { headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' } })
  },
})
if (metricsServer) log.info({ port: metricsServer.port }, 'serving metrics at /metrics')

async function shutdown(signal: string) {
  log.info({ signal, graceSeconds: config.TASKCAST_SHUTDOWN_GRACE_SECONDS }, 'shutting down: no new tasks; waiting for running ones')
  const code = await stopInOrder(
    [
      () => worker.stop(config.TASKCAST_SHUTDOWN_GRACE_SECONDS * 1000),
      () => metricsServer?.stop(true),
      () => Promise.all([sql, claimSql, lockSql].map((pool) => pool.end({ timeout: 5 }))),
      notifier.end,
      telemetry.shutdown,
    ],
    (error) => log.error({ err: error }, 'shutdown step failed'),
  )
  process.exit(code)
}
// A second signal exits at once; leases bring back whatever was still running.
onStopSignal((signal, count) => (count === 1 ? void shutdown(signal) : process.exit(1)))

await worker.start()
