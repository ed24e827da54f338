/**
 * `bun run bench [--quick] [--only=ingest,drain,…] [--no-peers]`: Taskcast's workloads against real
 * `api` and `worker` processes on a PostgreSQL of its own (embedded, durable settings) or on
 * DATABASE_URL's server, and the same workloads for graphile-worker, pg-boss and BullMQ in the
 * same run. Prints one table and writes it as JSON to bench/results.json.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { apiKeyCreate, tenantEnsure } from '../db/api-keys.ts'
import { createSql, type Sql } from '../db/client.ts'
import { startEmbeddedPostgres } from '../db/embedded-postgres.ts'
import { migrate } from '../db/migrate.ts'
import { taskClaim, taskProgress, type Lease } from '../db/task-leases.ts'
import { taskInsert, type NewTask } from '../db/tasks.ts'
import { describeMachine, measureMachine, type Machine } from './machine.ts'
import { preciseNow, quantile, root, rssMiB, runClient, spawnBun, startApi, startWorker } from './services.ts'

const flags = new Set(process.argv.slice(2))
const quick = flags.has('--quick')
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length).split(',')
const withPeers = !flags.has('--no-peers')
const seconds = quick ? 3 : 10
const drainTasks = quick ? 5000 : 10_000
/** The latency workloads first run their load this long, unmeasured (the peers' too). */
const warmupSeconds = 1

// ── the database ────────────────────────────────────────────────────────────────────────────

async function benchServer() {
  if (process.env.DATABASE_URL) return { adminUrl: process.env.DATABASE_URL, stop: async () => {} }
  const dataDir = mkdtempSync(join(tmpdir(), 'taskcast-bench-'))
  // Durable defaults (fsync and synchronous_commit on); room for the peers' pools too.
  const server = await startEmbeddedPostgres({ dataDir, password: 'taskcast-bench', settings: { max_connections: '300' } })
  return {
    adminUrl: server.url('postgres'),
    stop: async () => {
      await server.stop()
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

const withDatabase = (url: string, name: string) => Object.assign(new URL(url), { pathname: `/${name}` }).toString()

async function createDatabase(adminUrl: string, name: string): Promise<string> {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin`drop database if exists ${admin(name)} with (force)`
  await admin`create database ${admin(name)}`
  await admin.end()
  return withDatabase(adminUrl, name)
}

const server = await benchServer()
const url = await createDatabase(server.adminUrl, 'taskcast_bench')
const sql = createSql(url, { max: 20, applicationName: 'taskcast-bench' })
await migrate(sql)
const tenant = await tenantEnsure(sql, 'bench')
const key = await apiKeyCreate(sql, tenant.id)

const noopTask = (queue: string): NewTask => ({
  id: Bun.randomUUIDv7(), tenantId: tenant.id, type: 'demo.noop', queue, priority: 0, payload: {},
  maxAttempts: 3, timeoutSeconds: 600, runAt: null, traceparent: null, tracestate: null,
})

/**
 * Empties the task tables, so each workload starts where a new install does (and where the peers
 * start, on schemas they create anew): tables never analyzed. Analyzing them empty, as this once
 * did, told the planner they stay empty; the claim's cached plan then scanned the whole table for
 * the rest of the workload (233 µs of statement time a claimed task by 20,000 tasks, against ~70
 * through the index).
 */
async function reset(db: Sql) {
  await db`truncate taskcast.task_events, taskcast.tasks, taskcast.idempotency_keys`
}

/** A queue's unfinished tasks, each read from its own partial index: queued ones, and running ones. */
const queuedIn = (db: Sql, queue: string) => db`select 1 from taskcast.tasks where status = 'queued' and queue = ${queue}`
const runningIn = (db: Sql, queue: string) =>
  db`select 1 from taskcast.tasks where status = 'running' and lease_until is not null and queue = ${queue}`

/** How many unfinished tasks a queue has (once, at the end of a workload: it reads the whole backlog). */
async function unfinished(db: Sql, queue: string): Promise<number> {
  const [row] = await db<[{ n: number }]>`
    select (select count(*) from (${queuedIn(db, queue)} limit 100000) q)::int
         + (select count(*) from (${runningIn(db, queue)}) r)::int as n`
  return row.n
}

/**
 * Whether a queue has no unfinished task left: two probes that stop at the first row. Polled every
 * 25 ms, it must cost the database next to nothing: counting a backlog of 10,000 rows took ~3 ms a
 * poll, a tenth of a core taken from the workload being measured (the peers count their jobs
 * inside their worker processes, at no cost to the database).
 */
async function drained(db: Sql, queue: string): Promise<boolean> {
  const [row] = await db<[{ drained: boolean }]>`
    select not exists (${queuedIn(db, queue)}) and not exists (${runningIn(db, queue)}) as drained`
  return row.drained
}

async function untilDrained(db: Sql, queue: string, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs
  while (!(await drained(db, queue))) {
    if (Date.now() > deadline) throw new Error(`queue ${queue} did not drain within ${timeoutMs} ms`)
    await Bun.sleep(25)
  }
}

// ── the table ───────────────────────────────────────────────────────────────────────────────

interface Row {
  workload: string
  /** What `value` is: "tasks/s", "ms" (p50 latency), "KiB/stream". */
  unit: string
  value: number | null
  p50?: number | null
  p99?: number | null
  rssMiB?: number | null
  /** The peers' figure for the same workload, when they have one. */
  peers?: Record<string, PeerResult>
  note?: string
}

interface PeerResult {
  value: number | null
  p50?: number | null
  p99?: number | null
  config?: string
  note?: string
  error?: string
}

const rows: Row[] = []
const wanted = (name: string) => !only || only.some((prefix) => name.startsWith(prefix))

// ── Taskcast's workloads ────────────────────────────────────────────────────────────────────

interface HttpLoad { tasksPerSecond: number; p50: number | null; p99: number | null; errors: number }

/** `connections` connections POSTing one request at a time for `seconds` (bench/http-load.ts). */
function httpLoad(api: { url: string }, options: { path: string; body: unknown; tasksPerRequest: number; connections: number }) {
  return runClient<HttpLoad>('bench/http-load.ts', { url: api.url, key, seconds, ...options })
}

const noopSubmission = (queue: string) => ({ type: 'demo.noop', queue, payload: {} })

async function ingest() {
  await reset(sql)
  const api = await startApi(url)
  try {
    const queue = 'bench-ingest'
    const single = await httpLoad(api, { path: '/v1/tasks', body: noopSubmission(queue), tasksPerRequest: 1, connections: 64 })
    rows.push({
      workload: 'ingest, one task per request (64 connections)', unit: 'tasks/s', value: single.tasksPerSecond,
      p50: single.p50, p99: single.p99, rssMiB: rssMiB(api.proc.pid, true), note: single.errors ? `${single.errors} errors` : undefined,
    })
    await reset(sql)
    const batchSize = 1000
    const batch = await httpLoad(api, {
      path: '/v1/tasks/batch', body: { tasks: Array.from({ length: batchSize }, () => noopSubmission(queue)) }, tasksPerRequest: batchSize, connections: 4,
    })
    rows.push({
      workload: 'ingest, batch route (1,000 per request, 4 connections)', unit: 'tasks/s', value: batch.tasksPerSecond,
      p50: batch.p50, p99: batch.p99, rssMiB: rssMiB(api.proc.pid, true), note: batch.errors ? `${batch.errors} errors` : undefined,
    })
  } finally {
    await api.stop()
  }
}

async function drain() {
  await reset(sql)
  const queue = 'bench-drain'
  const total = drainTasks
  for (let i = 0; i < total; i += 1000) await taskInsert(sql, Array.from({ length: 1000 }, () => noopTask(queue)))
  const started = Date.now()
  const worker = await startWorker(url, queue)
  try {
    await untilDrained(sql, queue, 120_000)
    const [{ first, last }] = await sql<[{ first: Date; last: Date }]>`
      select min(started_at) as first, max(finished_at) as last from taskcast.tasks where queue = ${queue}`
    rows.push({
      workload: `drain ${total.toLocaleString('en')} queued no-op tasks (1 worker, concurrency 16)`, unit: 'tasks/s',
      value: total / ((last.getTime() - started) / 1000), rssMiB: rssMiB(worker.proc.pid, true),
      note: `from the worker process start; its first task started ${first.getTime() - started} ms after the spawn`,
    })
  } finally {
    await worker.stop()
  }
}

/** Runs `measure` against a fresh API and one worker (concurrency 16) serving `queue`, on empty tables. */
async function withApiAndWorker(queue: string, measure: (api: { url: string }, worker: { proc: { pid: number } }) => Promise<void>) {
  await reset(sql)
  const api = await startApi(url)
  const worker = await startWorker(url, queue)
  try {
    await measure(api, worker)
  } finally {
    await Promise.all([worker.stop(), api.stop()])
  }
}

const endToEnd = () => withApiAndWorker('bench-e2e', async (api, worker) => {
  const queue = 'bench-e2e'
  const started = new Date()
  const load = await httpLoad(api, { path: '/v1/tasks', body: noopSubmission(queue), tasksPerRequest: 1, connections: 64 })
  const ended = new Date()
  const [{ done }] = await sql<[{ done: number }]>`
    select count(*)::int as done from taskcast.tasks
    where queue = ${queue} and finished_at between ${started} and ${ended}`
  const backlog = await unfinished(sql, queue)
  rows.push({
    workload: 'end to end: HTTP submit (64 connections) and run, continuously', unit: 'tasks/s',
    value: done / ((ended.getTime() - started.getTime()) / 1000), rssMiB: rssMiB(worker.proc.pid, true),
    note: `submitted ${Math.round(load.tasksPerSecond)}/s; ${backlog} still queued at the end`,
  })
})

const pickup = () => withApiAndWorker('bench-pickup', async (api) => {
  const queue = 'bench-pickup'
  const sent = await runClient<{ tasks: Array<{ id: string; sentAt: number; handedOff: boolean }>; errors: number }>('bench/load.ts', {
    mode: 'paced', url: api.url, key, queue, seconds, intervalMs: 20, warmupSeconds,
  })
  await untilDrained(sql, queue, 30_000)
  const results = await sql<Array<{ id: string; startedAt: number }>>`
    select id, (result ->> 'startedAt')::float8 as started_at from taskcast.tasks where id = any(${sent.tasks.map((t) => t.id)}::uuid[])`
  const startedAt = new Map(results.map((row) => [row.id, row.startedAt]))
  const delays = sent.tasks.map((task) => startedAt.get(task.id)! - task.sentAt)
  rows.push({
    workload: 'pickup: HTTP submit → handler start (idle worker, one task / 20 ms)', unit: 'ms',
    value: quantile(delays, 0.5), p50: quantile(delays, 0.5), p99: quantile(delays, 0.99),
    note: `${delays.length} tasks, ${sent.tasks.filter((task) => task.handedOff).length} handed straight to the worker`,
  })
})

const progress = () => withApiAndWorker('bench-progress', async (api) => {
  const read = await runClient<{ events: number; p50: number; p99: number }>('bench/load.ts', {
    mode: 'progress', url: api.url, key, queue: 'bench-progress', tasks: 4, reports: quick ? 20 : 60, intervalMs: 120,
    warmupSeconds,
  })
  rows.push({
    workload: 'progress: handler progress() → SSE client, stored first', unit: 'ms',
    value: read.p50, p50: read.p50, p99: read.p99, note: `${read.events} events`,
  })
})

async function fanOut(clients: number) {
  await reset(sql)
  const queue = 'bench-fanout'
  // Each client follows a task of its own (as a user watching the task they submitted).
  const taskCount = clients
  const eventsPerSecond = 1000
  await taskInsert(sql, Array.from({ length: taskCount }, () => noopTask(queue)))
  const claimed = await taskClaim(sql, { workerId: 'bench-fanout', queues: [queue], limit: taskCount, leaseSeconds: 3600 })
  const leases: Lease[] = claimed.map((task) => ({ id: task.id, attempt: task.attempt, workerId: 'bench-fanout' }))
  const api = await startApi(url)
  const idle = rssMiB(api.proc.pid)!
  const eventsPerStream = Math.max(1, Math.round((eventsPerSecond * seconds) / taskCount))
  // Bun's fetch runs at most 256 requests at once unless told otherwise.
  // The task ids go in a file: 10,000 of them are past the limit of a command line.
  const argsFile = join(tmpdir(), `taskcast-bench-fanout-${process.pid}.json`)
  writeFileSync(argsFile, JSON.stringify({
    url: api.url, key, taskIds: leases.map((lease) => lease.id), clients, eventsPerStream, timeoutSeconds: seconds + 30,
  }))
  const viewers = spawnBun('bench/sse-clients.ts', { BUN_CONFIG_MAX_HTTP_REQUESTS: String(clients + 100) }, [argsFile])
  try {
    const connected = await viewers.waitForLog((line) => line.message === 'connected', 120_000)
    await Bun.sleep(500) // let the API settle after the connection storm before measuring memory
    const withStreams = rssMiB(api.proc.pid)!
    // 1,000 progress events a second, spread over the tasks, each stamped with when it was written.
    const started = performance.now()
    const tick = 10
    for (let sent = 0, round = 0; sent < eventsPerStream * taskCount; round++) {
      const wait = started + round * tick - performance.now()
      if (wait > 0) await Bun.sleep(wait)
      const batch: Lease[] = []
      for (let i = 0; i < (eventsPerSecond * tick) / 1000; i++) batch.push(leases[(sent + i) % taskCount]!)
      await Promise.all(batch.map((lease) => taskProgress(sql, lease, { percent: 50, message: String(preciseNow()) })))
      sent += batch.length
    }
    const done = await viewers.waitForLog((line) => line.message === 'done', (seconds + 40) * 1000)
    rows.push({
      workload: `fan-out: ${clients.toLocaleString('en')} SSE streams on one API, ${eventsPerSecond.toLocaleString('en')} events/s`, unit: 'KiB/stream',
      value: ((withStreams - idle) * 1024) / clients, p50: done.p50 as number, p99: done.p99 as number, rssMiB: withStreams,
      note: `${connected.connected} connected, ${connected.failed} failed, ${done.dropped} dropped; ${done.received}/${done.expected} deliveries`,
    })
  } finally {
    await Promise.all([viewers.stop(), api.stop()])
    rmSync(argsFile, { force: true })
  }
}

// ── the peers ───────────────────────────────────────────────────────────────────────────────

const peerNames = ['graphile-worker', 'pg-boss', 'bullmq'] as const
const nodeBin = join(root, 'bench/node_modules/.bin/node')

async function peer(name: string, workload: string, extra: string[] = []): Promise<PeerResult> {
  const database = await createDatabase(server.adminUrl, `bench_${name.replace('-', '_')}`)
  const proc = Bun.spawn([nodeBin, join(root, 'bench/peers/peer.mjs'), '--peer', name, '--workload', workload, ...extra], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: database, REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/5' },
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
  })
  const timeout = setTimeout(() => proc.kill('SIGKILL'), 180_000)
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited])
  clearTimeout(timeout)
  const last = out.trim().split('\n').at(-1)
  if (code !== 0 || !last) return { value: null, error: (err.trim().split('\n').at(-1) ?? `exit ${code}`).slice(0, 200) }
  return JSON.parse(last) as PeerResult
}

async function peers(rowIndex: number, workload: string, extra: string[] = [], names: readonly string[] = peerNames) {
  const row = rows[rowIndex]
  if (!withPeers || !row) return
  row.peers = {}
  for (const name of names) row.peers[name] = await peer(name, workload, extra)
}

/**
 * The peers and the Node they run on are dev dependencies of bench/ alone, installed on first use.
 */
function installBenchDependencies() {
  if (existsSync(nodeBin) && existsSync(join(root, 'bench/node_modules/bullmq'))) return
  process.stderr.write('bench: installing its dependencies (bench/package.json)…\n')
  const install = Bun.spawnSync([process.execPath, 'install', '--frozen-lockfile'], { cwd: join(root, 'bench'), stdout: 'inherit', stderr: 'inherit' })
  if (install.exitCode !== 0) throw new Error('could not install bench/ dependencies')
}

// ── run ─────────────────────────────────────────────────────────────────────────────────────

const peerArgs = ['--seconds', String(seconds)]
const plan: Array<[string, () => Promise<void>]> = [
  ['ingest', async () => {
    await ingest()
    await peers(rows.length - 2, 'enqueue', peerArgs)
  }],
  ['drain', async () => {
    await drain()
    await peers(rows.length - 1, 'drain', ['--tasks', String(drainTasks)])
    if (quick || !withPeers) return
    // The same drain, with each Postgres peer's own batching options (its docs' advice for throughput).
    rows.push({ ...rows.at(-1)!, workload: `${rows.at(-1)!.workload}, peers with their batching options`, peers: undefined })
    await peers(rows.length - 1, 'drain', ['--tasks', String(drainTasks), '--variant', 'batch'], ['graphile-worker', 'pg-boss'])
  }],
  ['e2e', async () => {
    await endToEnd()
    await peers(rows.length - 1, 'e2e', peerArgs)
  }],
  ['pickup', async () => {
    await pickup()
    await peers(rows.length - 1, 'pickup', peerArgs)
  }],
  ['progress', async () => {
    await progress()
    await peers(rows.length - 1, 'progress', peerArgs)
  }],
  ['fanout', async () => {
    await fanOut(1000)
    if (!quick) await fanOut(10_000)
  }],
]

// The machine's pace, before and after: it varies from day to day, and within a run.
const machine: { start?: Machine; end?: Machine } = {}
try {
  machine.start = await measureMachine(url)
  installBenchDependencies()
  for (const [name, run] of plan) {
    if (!wanted(name)) continue
    process.stderr.write(`bench: ${name}…\n`)
    await run()
  }
  machine.end = await measureMachine(url)
} finally {
  await sql.end({ timeout: 5 })
  await server.stop()
}

// Higher is better for rates; lower for latencies and memory. "×" > 1 means ahead of the best peer.
const lowerIsBetter = (row: Row) => row.unit !== 'tasks/s'
const format = (value: number | null | undefined, digits = 1) =>
  value === null || value === undefined ? '–' : value >= 100 ? Math.round(value).toLocaleString('en') : value.toFixed(digits)

function versusBest(row: Row): string {
  const figures = Object.values(row.peers ?? {}).map((p) => p.value).filter((v): v is number => typeof v === 'number' && v > 0)
  if (figures.length === 0 || !row.value) return '–'
  const best = lowerIsBetter(row) ? Math.min(...figures) : Math.max(...figures)
  return `${(lowerIsBetter(row) ? best / row.value : row.value / best).toFixed(2)}×`
}

const peerCell = (row: Row, name: string) => {
  const result = row.peers?.[name]
  if (!result) return '–'
  if (result.error) return 'error'
  if (result.value === null) return 'n/a'
  return row.unit === 'ms' && result.p99 != null ? `${format(result.p50 ?? result.value)} / ${format(result.p99)}` : format(result.value)
}

const header = ['workload', 'unit', 'Taskcast', 'p50 ms', 'p99 ms', 'RSS MiB', ...peerNames, 'vs best peer']
const table = rows.map((row) => [
  row.workload, row.unit, format(row.value), format(row.p50), format(row.p99), format(row.rssMiB, 0),
  ...peerNames.map((name) => peerCell(row, name)), versusBest(row),
])
const widths = header.map((title, column) => Math.max(title.length, ...table.map((line) => line[column]!.length)))
const line = (cells: string[]) => `| ${cells.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`
console.log(line(header))
console.log(`|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`)
for (const cells of table) console.log(line(cells))
for (const row of rows) if (row.note) console.log(`- ${row.workload}: ${row.note}`)
for (const name of peerNames) {
  const config = rows.map((row) => row.peers?.[name]?.config).find(Boolean)
  if (config) console.log(`- ${name}: ${config}`)
  for (const row of rows) if (row.peers?.[name]?.error) console.log(`- ${name}, ${row.workload}: ${row.peers[name].error}`)
}
if (machine.start) console.log(`- the machine before the workloads: ${describeMachine(machine.start)}`)
if (machine.end) console.log(`- the machine after them: ${describeMachine(machine.end)}`)
writeFileSync(join(root, 'bench/results.json'), JSON.stringify({ quick, at: new Date().toISOString(), machine, rows }, null, 2))
console.log('written to bench/results.json')
