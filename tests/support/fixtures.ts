import { assembleApi } from '../../api/app.ts'
import { apiKeyCreate, tenantEnsure } from '../../db/api-keys.ts'
import { catalogue, type TaskType } from '../../db/catalogue.ts'
import { createSql } from '../../db/client.ts'
import { createListener } from '../../db/listener.ts'
import { listenLock } from '../../db/notify.ts'
import type { NewTask } from '../../db/tasks.ts'
import { createLogger } from '../../observability/log.ts'
import { initTelemetry } from '../../observability/telemetry.ts'
import { createWorker, type WorkerOptions } from '../../worker/loop.ts'
import type { RunEnd } from '../../worker/run.ts'
import { testDb } from './database.ts'

export const quietLog = createLogger('taskcast-test', process.env.TEST_LOG_LEVEL ?? 'silent')

/** The in-process app's telemetry: metrics served at /metrics, spans made but not exported. */
const testTelemetry = initTelemetry('taskcast-test', {})

export const uniqueName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`

/** A new tenant with an API key of its own. */
export async function newTenant(name = uniqueName('tenant')) {
  const tenant = await tenantEnsure(testDb().sql, name)
  const key = await apiKeyCreate(testDb().sql, tenant.id)
  return { ...tenant, key, auth: { authorization: `Bearer ${key}` } }
}

/** A task row to insert directly; the queue defaults to one no other test uses. */
export function newTask(tenantId: string, overrides: Partial<NewTask> = {}): NewTask {
  const type = (overrides.type ?? 'demo.sleep') as TaskType
  return {
    id: Bun.randomUUIDv7(),
    tenantId,
    type,
    queue: uniqueName('q'),
    priority: 0,
    payload: { seconds: 0 },
    maxAttempts: catalogue[type].maxAttempts,
    timeoutSeconds: catalogue[type].timeoutSeconds,
    runAt: null,
    traceparent: null,
    tracestate: null,
    ...overrides,
  }
}

export const streamSecret = 'test-stream-secret-0123456789'

/**
 * The API assembled as api/main.ts assembles it, on the test database, with its own LISTEN connection.
 * Call stop() when done.
 */
export async function startApp(options: { ssePingMs?: number; maxPayloadBytes?: number } = {}) {
  const { sql, url } = testDb()
  const insertConnections = [1, 2].map(() => createSql(url, { max: 1, applicationName: 'taskcast-test-insert', synchronousCommit: false }))
  const { app, hub, listener, tokens, metrics } = assembleApi({
    sql,
    insertConnections,
    databaseUrl: url,
    log: quietLog,
    streamSecret,
    maxPayloadBytes: options.maxPayloadBytes ?? 262_144,
    ssePingMs: options.ssePingMs ?? 15_000,
    listenHealthMs: 2000,
    listenerName: 'taskcast-test-api',
    metricsText: testTelemetry.metricsText,
  })
  await listener.start()
  /** Sends a request to the app without a socket. */
  const request = (path: string, init: RequestInit & { json?: unknown } = {}) => {
    const { json, ...rest } = init
    const headers = new Headers(rest.headers)
    if (json !== undefined) headers.set('content-type', 'application/json')
    return app.handle(new Request(`http://localhost${path}`, {
      ...rest,
      headers,
      body: json !== undefined ? JSON.stringify(json) : rest.body,
    }))
  }
  const stop = async () => {
    metrics.close()
    await listener.stop()
    await Promise.all(insertConnections.map((pool) => pool.end({ timeout: 1 })))
  }
  return { app, hub, tokens, listener, request, stop }
}

/** How many connections say they listen to task events: those holding every key of the listeners' lock. */
export async function announcers(): Promise<number> {
  const [{ n }] = await testDb().sql<[{ n: number }]>`
    select count(*)::int as n from (
      select pid from pg_locks
      where locktype = 'advisory' and classid = ${listenLock.class} and objsubid = 2 and granted
      group by pid having count(*) = ${listenLock.keys}
    ) announcing`
  return n
}

/** Waits until `condition` holds, checking every 10 ms; fails after `timeoutMs`. */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await Bun.sleep(10)
  }
}

/** The real claim loop on the test database with its own LISTEN connection, as worker/main.ts wires it. */
export async function startWorker(options: Partial<Pick<WorkerOptions, 'queues' | 'concurrency' | 'prefetch' | 'pollMs' | 'leaseSeconds'>> & { queues: string[] }) {
  const { sql, url } = testDb()
  const listener = createListener({ url, applicationName: 'taskcast-test-worker', log: quietLog, healthCheckMs: 2000 })
  const workerId = uniqueName('worker')
  const lockSql = createSql(url, { max: 1, applicationName: 'taskcast-test-worker-alive', keepConnections: true })
  const worker = createWorker({
    sql,
    lockSql,
    listener,
    log: quietLog,
    workerId,
    concurrency: 4,
    pollMs: 1000,
    leaseSeconds: 30,
    ...options,
  })
  const ends = new Map<string, Array<(end: RunEnd) => void>>()
  worker.onRunEnd((task, end) => {
    for (const resolve of ends.get(task.id) ?? []) resolve(end)
    ends.delete(task.id)
  })
  await worker.start()
  return {
    worker,
    workerId,
    /** Resolves with how the task's next run ends. */
    runEnd: (taskId: string) => new Promise<RunEnd>((resolve) => ends.set(taskId, [...(ends.get(taskId) ?? []), resolve])),
    stop: async (graceMs = 0) => {
      await worker.stop(graceMs)
      await lockSql.end({ timeout: 1 })
    },
  }
}
