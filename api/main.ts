import { randomBytes } from 'node:crypto'
import * as v from 'valibot'
import { createSql } from '../db/client.ts'
import { env, parseEnv } from '../db/env.ts'
import { onStopSignal, stopInOrder } from '../lifecycle/signals.ts'
import { createLogger } from '../observability/log.ts'
import { traceSql } from '../observability/sql-tracing.ts'
import { initTelemetry } from '../observability/telemetry.ts'
import { assembleApi } from './app.ts'

const Env = v.object({
  DATABASE_URL: env.databaseUrl,
  PORT: env.int(3000, 0, 65_535),
  HOST: v.optional(v.string(), '0.0.0.0'),
  TASKCAST_STREAM_SECRET: v.optional(v.pipe(v.string(), v.minLength(16, 'must be at least 16 characters'))),
  TASKCAST_MAX_PAYLOAD_BYTES: env.int(262_144, 1024, 64 * 1024 * 1024),
  TASKCAST_SSE_PING_SECONDS: env.number(15, 0.05, 3600),
  TASKCAST_LISTEN_HEALTH_SECONDS: env.number(10, 0.5, 3600),
  OTEL_SERVICE_NAME: v.optional(v.string(), 'taskcast-api'),
  TASKCAST_TRACE_URL: v.optional(v.pipe(
    v.string(),
    v.regex(/^https?:\/\/\S+$/, 'must be an http(s) URL'),
    v.includes('{traceId}', 'must contain {traceId}, e.g. http://localhost:16686/trace/{traceId}'),
  )),
})

const config = parseEnv(Env)
const telemetry = initTelemetry('taskcast-api')
const log = createLogger(config.OTEL_SERVICE_NAME)

let streamSecret = config.TASKCAST_STREAM_SECRET
if (!streamSecret) {
  streamSecret = randomBytes(32).toString('hex')
  log.warn({}, 'TASKCAST_STREAM_SECRET is not set: stream tokens are signed with a random key and stop working on restart; set it when running several API instances')
}

// Statements time out within the 5 s in which a request must get an answer, even a 503. NOTIFYs
// stay inside the API's statements, so workers hear of new tasks one hop sooner than through a
// notifier as the workers use (db/notify.ts): the database-wide lock a NOTIFY holds until its
// commit is flushed costs little here, as submissions commit without waiting for the disk.
const sql = traceSql(createSql(config.DATABASE_URL, { max: 10, applicationName: 'taskcast-api', statementTimeoutMs: 4000 }))
// Submissions commit without waiting for the disk and are answered once a flush has put them on
// disk (see taskInsertDurably): their workers hear of them one disk flush sooner. Two
// connections, each its own pool, so that an insert and its flush go through the same one.
const insertConnections = [1, 2].map((n) => traceSql(createSql(config.DATABASE_URL, {
  max: 1, applicationName: `taskcast-api-insert-${n}`, statementTimeoutMs: 4000, synchronousCommit: false,
})))
const { app, hub, listener, metrics } = assembleApi({
  sql,
  insertConnections,
  databaseUrl: config.DATABASE_URL,
  log,
  streamSecret,
  maxPayloadBytes: config.TASKCAST_MAX_PAYLOAD_BYTES,
  ssePingMs: config.TASKCAST_SSE_PING_SECONDS * 1000,
  listenHealthMs: config.TASKCAST_LISTEN_HEALTH_SECONDS * 1000,
  metricsText: telemetry.metricsText,
  traceUrl: config.TASKCAST_TRACE_URL,
})

// Serve at once; live events start flowing when the LISTEN connection is up (/readyz says when).
void listener.start()
app.listen({ port: config.PORT, hostname: config.HOST })
log.info({ url: `http://${config.HOST}:${app.server!.port}`, port: app.server!.port }, 'listening')

const streamsEndMs = 5000

/** Stops accepting, ends open streams cleanly (their clients reconnect with Last-Event-ID), waits for the rest. */
async function stopServing() {
  const stopped = app.stop(false)
  hub.endAll()
  const done = await Promise.race([stopped.then(() => true), Bun.sleep(streamsEndMs).then(() => false)])
  if (!done) await app.stop(true)
}

async function shutdown(signal: string) {
  log.info({ signal }, 'shutting down')
  const code = await stopInOrder(
    [
      stopServing,
      () => metrics.close(),
      () => listener.stop(),
      () => Promise.all([sql, ...insertConnections].map((pool) => pool.end({ timeout: 5 }))),
      telemetry.shutdown,
    ],
    (error) => log.error({ err: error }, 'shutdown step failed'),
  )
  process.exit(code)
}
onStopSignal((signal, count) => (count === 1 ? void shutdown(signal) : process.exit(1)))
