import { afterEach, describe, expect, test } from 'bun:test'
import { createListener } from '../db/listener.ts'
import { taskEventsAfter, type TaskEventRow } from '../db/task-events.ts'
import { taskClaim, taskProgress, taskSucceed } from '../db/task-leases.ts'
import { taskCancel, taskGet, taskInsert, type NewTask } from '../db/tasks.ts'
import { createWorker, prefetchTarget } from '../worker/loop.ts'
import { AttemptAbort, runTask, TaskAbort, type RunEnd } from '../worker/run.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, quietLog, startWorker, uniqueName, until } from './support/fixtures.ts'

const stops: Array<() => Promise<void>> = []
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()))
})

async function workerOn(queues: string[], options: Parameters<typeof startWorker>[0] extends infer O ? Partial<O> : never = {}) {
  const started = await startWorker({ ...options, queues })
  stops.push(() => started.stop())
  return started
}

async function insert(tenantId: string, overrides: Partial<NewTask>) {
  const [task] = await taskInsert(testDb().sql, [newTask(tenantId, overrides)])
  return task!
}

const isRunning = (tenantId: string, taskId: string) =>
  until(async () => (await taskGet(testDb().sql, tenantId, taskId))?.status === 'running', 10_000, 'the task to be running')

const statuses = (events: TaskEventRow[]) =>
  events.filter((event) => event.kind === 'status').map((event) => `${event.data.status}:${event.data.attempt}`)

describe('the worker', () => {
  test('runs a task to succeeded, with its progress and result', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, payload: { seconds: 0.2, steps: 2 } })
    expect(await runEnd(task.id)).toBe('succeeded')
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    expect(stored).toMatchObject({ status: 'succeeded', attempt: 1, result: { slept: 0.2, steps: 2 }, progress: { percent: 100, message: 'step 2/2' } })
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    expect(events.map((event) => event.kind === 'progress' ? event.data.message : event.data.status))
      .toEqual(['queued', 'running', 'step 1/2', 'step 2/2', 'succeeded'])
  })

  test('runs the CPU-bound demo.primes type with progress', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, type: 'demo.primes', payload: { limit: 3_000_000 } })
    expect(await runEnd(task.id)).toBe('succeeded')
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    expect(stored!.result).toEqual({ limit: 3_000_000, count: 216_816, largest: 2_999_999 })
    const progress = (await taskEventsAfter(testDb().sql, task.id, 0)).filter((event) => event.kind === 'progress')
    expect(progress.length).toBeGreaterThanOrEqual(2)
    expect(progress.at(-1)!.data).toMatchObject({ percent: 100 })
  })

  test('runs demo.noop: returns when it started, after progress messages stamped with the time they were made', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const before = Date.now()
    const task = await insert(tenant.id, { queue, type: 'demo.noop', payload: { reports: 2, intervalMs: 150 } })
    expect(await runEnd(task.id)).toBe('succeeded')
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    const startedAt = (stored!.result as { startedAt: number }).startedAt
    expect(startedAt).toBeGreaterThanOrEqual(before - 1)
    const stamps = (await taskEventsAfter(testDb().sql, task.id, 0)).filter((event) => event.kind === 'progress').map((event) => Number(event.data.message))
    expect(stamps).toHaveLength(2)
    expect(stamps[0]! - startedAt).toBeGreaterThanOrEqual(149)
    expect(stamps[1]! - stamps[0]!).toBeGreaterThanOrEqual(149)
  })

  test('stores at most ~10 progress reports a second, and always the last one', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, payload: { seconds: 0.5, steps: 500 } })
    expect(await runEnd(task.id)).toBe('succeeded')
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    const progress = events.filter((event) => event.kind === 'progress')
    const elapsed = events.at(-1)!.createdAt.getTime() - events[1]!.createdAt.getTime()
    expect(progress.length).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 2)
    expect(events.at(-2)!.data).toEqual({ percent: 100, message: 'step 500/500' })
    expect(events.at(-1)!.data.status).toBe('succeeded')
  })

  test('retries a thrown error after a backoff, then succeeds', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, payload: { seconds: 0, steps: 1, failTimes: 1 } })
    expect(await runEnd(task.id)).toBe('retrying')
    expect(await runEnd(task.id)).toBe('succeeded')
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    expect(statuses(events)).toEqual(['queued:0', 'running:1', 'queued:1', 'running:2', 'succeeded:2'])
    const retry = events[2]!
    expect(retry.data.error).toEqual({ name: 'Error', message: 'failing on purpose: attempt 1 of the first 1', retryable: true })
    // demo.sleep backs off 1 s for the first retry, scaled by a jitter factor in [0.5, 1).
    const backoffMs = Date.parse(retry.data.retryAt as string) - retry.createdAt.getTime()
    expect(backoffMs).toBeGreaterThanOrEqual(490)
    expect(backoffMs).toBeLessThanOrEqual(1010)
    expect(events[3]!.createdAt.getTime()).toBeGreaterThanOrEqual(Date.parse(retry.data.retryAt as string))
  })

  test('fails a task that runs out of attempts, keeping the last error', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, maxAttempts: 2, payload: { seconds: 0, steps: 1, failTimes: 5 } })
    expect(await runEnd(task.id)).toBe('retrying')
    expect(await runEnd(task.id)).toBe('failed')
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    expect(stored).toMatchObject({ status: 'failed', attempt: 2, error: { message: 'failing on purpose: attempt 2 of the first 5' } })
    expect(stored!.finishedAt).toBeInstanceOf(Date)
  })

  test('fails at once, without retrying, on a permanent error (a stored payload that fails its schema)', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, payload: { seconds: 'never' } })
    expect(await runEnd(task.id)).toBe('failed')
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    expect(stored).toMatchObject({ status: 'failed', attempt: 1, maxAttempts: 3, error: { name: 'PermanentError', retryable: false } })
    expect(stored!.error!.message).toContain('seconds')
  })

  test('is woken by NOTIFY the moment a task is inserted, without waiting for its poll', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue], { pollMs: 600_000 })
    const task = await insert(tenant.id, { queue })
    expect(await runEnd(task.id)).toBe('succeeded')
  })

  test('after its LISTEN connection is killed, reconnects and looks for the work it was not told about', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue], { pollMs: 600_000 })
    const [killed] = await testDb().sql`
      select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = 'taskcast-test-worker'`
    expect(killed!.n).toBe(1)
    const task = await insert(tenant.id, { queue })
    expect(await runEnd(task.id)).toBe('succeeded')
  })

  test('starts on the tasks already queued while its LISTEN connection is still being made', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const task = await insert(tenant.id, { queue })
    // Nothing listens on port 1: the LISTEN connection keeps failing, and start() keeps waiting for it.
    const listener = createListener({ url: 'postgres://taskcast@127.0.0.1:1/none', applicationName: 'taskcast-test-worker', log: quietLog })
    const worker = createWorker({
      sql: testDb().sql, listener, log: quietLog, workerId: uniqueName('worker'), queues: [queue], concurrency: 4, pollMs: 600_000, leaseSeconds: 30,
    })
    const ended = new Promise<RunEnd>((resolve) => worker.onRunEnd((run, end) => run.id === task.id && resolve(end)))
    const starting = worker.start()
    stops.push(async () => {
      await worker.stop(0)
      await starting
    })
    expect(await ended).toBe('succeeded')
    expect(listener.connected).toBe(false)
  })

  test('finds a delayed task by polling once its runAt has come', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue], { pollMs: 100 })
    const runAt = new Date(Date.now() + 300)
    const task = await insert(tenant.id, { queue, runAt })
    expect(await runEnd(task.id)).toBe('succeeded')
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    expect(stored!.startedAt!.getTime()).toBeGreaterThanOrEqual(runAt.getTime())
  })

  test('claims only from its queues', async () => {
    const tenant = await newTenant()
    const [a, b, elsewhere] = [uniqueName('q'), uniqueName('q'), uniqueName('q')]
    const { runEnd } = await workerOn([a, b])
    const other = await insert(tenant.id, { queue: elsewhere })
    const tasks = [await insert(tenant.id, { queue: a }), await insert(tenant.id, { queue: b })]
    expect(await Promise.all(tasks.map((task) => runEnd(task.id)))).toEqual(['succeeded', 'succeeded'])
    expect((await taskGet(testDb().sql, tenant.id, other.id))!.status).toBe('queued')
  })

  test('runs at most its concurrency at once, and uses all of it', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue], { concurrency: 2 })
    const tasks = await taskInsert(testDb().sql, Array.from({ length: 6 }, () => newTask(tenant.id, { queue, payload: { seconds: 0.3, steps: 1 } })))
    await Promise.all(tasks.map((task) => runEnd(task.id)))
    // From the claim to the handler's last progress report: the time each task held a slot. (Its
    // outcome is stored after the slot is given to the next task.)
    const spans = await Promise.all(tasks.map(async (task) => {
      const events = await taskEventsAfter(testDb().sql, task.id, 0)
      const lastProgress = events.findLast((event) => event.kind === 'progress')!
      return [events[1]!.createdAt.getTime(), lastProgress.createdAt.getTime()] as const
    }))
    const overlap = (at: number) => spans.filter(([start, end]) => start <= at && at < end).length
    const peak = Math.max(...spans.map(([start]) => overlap(start)))
    expect(peak).toBe(2)
  })

  test('aborts the handler of a running task whose cancel is requested, and ends it canceled', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { runEnd } = await workerOn([queue])
    const task = await insert(tenant.id, { queue, payload: { seconds: 60, steps: 60 } })
    const ended = runEnd(task.id)
    await isRunning(tenant.id, task.id)
    expect(await taskCancel(testDb().sql, tenant.id, task.id)).toMatchObject({ outcome: 'requested' })
    expect(await ended).toBe('canceled')
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    expect(statuses(events)).toEqual(['queued:0', 'running:1', 'canceled:1'])
  })

  test('on stop, lets a short task finish within the grace period', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const started = await startWorker({ queues: [queue] })
    const task = await insert(tenant.id, { queue, payload: { seconds: 0.3, steps: 1 } })
    const ended = started.runEnd(task.id)
    await isRunning(tenant.id, task.id)
    await started.stop(10_000)
    expect(await ended).toBe('succeeded')
  })

  test('on stop past the grace period, aborts and hands unfinished tasks back to the queue at once', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const started = await startWorker({ queues: [queue] })
    const task = await insert(tenant.id, { queue, payload: { seconds: 60, steps: 60 } })
    await isRunning(tenant.id, task.id)
    await started.stop(50)
    const stored = await taskGet(testDb().sql, tenant.id, task.id)
    expect(stored).toMatchObject({ status: 'queued', attempt: 0, lockedBy: null })
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    expect(events.at(-1)!.data).toEqual({ status: 'queued', attempt: 0, reason: 'released: the worker shut down' })
  })
})

describe('claiming ahead of free slots', () => {
  test('holds as many tasks ahead as quick handlers free during one claim, and none behind slow ones', () => {
    expect(prefetchTarget({ concurrency: 16, maxPrefetch: 16 })).toBe(0)
    expect(prefetchTarget({ concurrency: 16, maxPrefetch: 16, handlerMs: 0.1, claimMs: 3 })).toBe(16)
    expect(prefetchTarget({ concurrency: 16, maxPrefetch: 16, handlerMs: 12, claimMs: 3 })).toBe(4)
    expect(prefetchTarget({ concurrency: 16, maxPrefetch: 16, handlerMs: 60_000, claimMs: 3 })).toBe(0)
    expect(prefetchTarget({ concurrency: 16, maxPrefetch: 0, handlerMs: 0.1, claimMs: 3 })).toBe(0)
  })

  test('stopped while draining quick tasks, leaves each one either done once or back in the queue untouched', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const tasks = await taskInsert(sql, Array.from({ length: 400 }, () => newTask(tenant.id, { queue, type: 'demo.noop', payload: {} })))
    const started = await startWorker({ queues: [queue], concurrency: 2, prefetch: 16 })
    let ended = 0
    const halfway = new Promise<void>((resolve) => started.worker.onRunEnd(() => ++ended === 150 && resolve()))
    await halfway
    await started.stop(5_000)

    const rows = await sql<Array<{ status: string; attempt: number; n: number }>>`
      select status, attempt, count(*)::int as n from taskcast.tasks where queue = ${queue} group by 1, 2 order by 1`
    const counts = Object.fromEntries(rows.map((row) => [`${row.status}:${row.attempt}`, row.n]))
    expect(Object.keys(counts).every((key) => key === 'succeeded:1' || key === 'queued:0')).toBe(true)
    expect(counts['succeeded:1']).toBeGreaterThanOrEqual(150)
    expect((counts['succeeded:1'] ?? 0) + (counts['queued:0'] ?? 0)).toBe(tasks.length)
    // A task handed back had been claimed, never run: its last event says so.
    const [handedBack] = await sql<[{ n: number; released: number }]>`
      select count(*)::int as n, count(*) filter (where e.data ->> 'reason' = 'released: the worker shut down')::int as released
      from taskcast.tasks t join taskcast.task_events e on e.task_id = t.id and e.seq = t.last_seq
      where t.queue = ${queue} and t.status = 'queued' and t.last_seq > 1`
    expect(handedBack.released).toBe(handedBack.n)
  })

  test('a task canceled while it waited for a slot never reaches its handler', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    await taskInsert(sql, [newTask(tenant.id, { queue, type: 'demo.noop', payload: {} })])
    const [task] = await taskClaim(sql, { workerId: 'worker-a', queues: [queue], limit: 1, leaseSeconds: 30 })
    expect(await taskCancel(sql, tenant.id, task!.id)).toMatchObject({ outcome: 'requested' })
    const abort = new AttemptAbort()
    abort.abort(new TaskAbort('canceled', 'canceled by request'))
    const end: RunEnd = await runTask(task!, {
      sql, log: quietLog, workerId: 'worker-a', abort,
      succeed: (lease, result) => taskSucceed(sql, lease, result),
      reportProgress: (lease, progress) => taskProgress(sql, lease, progress),
    })
    expect(end).toBe('canceled')
    expect(await taskGet(sql, tenant.id, task!.id)).toMatchObject({ status: 'canceled', result: null })
    expect(statuses(await taskEventsAfter(sql, task!.id, 0))).toEqual(['queued:0', 'running:1', 'canceled:1'])
  })
})
