import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test'
import { createSql } from '../db/client.ts'
import { createListener } from '../db/listener.ts'
import { taskEventsAfter } from '../db/task-events.ts'
import { taskGet, taskInsert, type NewTask } from '../db/tasks.ts'
import { workerLockClass, workerRegister, workersPruneGone } from '../db/workers.ts'
import { handoffChannel } from '../worker/loop.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, quietLog, startWorker, uniqueName, until } from './support/fixtures.ts'
import { killAll, postTask, spawnApi, spawnWorker } from './support/processes.ts'

/** Submissions that hand their task straight to a waiting worker (taskInsert, db/workers.ts). */

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/**
 * A worker in the registry, alive while its lock connection is kept, with `free` slots, and
 * counted as running for the rest of the test (it does not beat: see db/workers.ts).
 */
async function registered(queue: string, free: number) {
  const { sql } = testDb()
  const id = uniqueName('worker')
  const lockSql = createSql(testDb().url, { max: 1, applicationName: 'taskcast-test-alive', keepConnections: true })
  await workerRegister(sql, lockSql, { id, queues: [queue], leaseSeconds: 30, channel: handoffChannel(id) })
  await sql`update taskcast.workers set free = ${free}, alive_until = now() + interval '1 hour' where id = ${id}`
  const [{ lockKey }] = await sql<[{ lockKey: number }]>`select lock_key from taskcast.workers where id = ${id}`
  /** Ends its lock connection, and resolves once PostgreSQL has let go of the lock. */
  const release = async () => {
    await lockSql.end({ timeout: 1 })
    await until(async () => !(await lockHeld(lockKey)), 10_000, 'the lock to be let go')
  }
  cleanups.push(async () => {
    await release().catch(() => {})
    await sql`delete from taskcast.workers where id = ${id}`
  })
  return { id, release }
}

const lockHeld = async (key: number) => (await testDb().sql`
  select 1 from pg_locks where locktype = 'advisory' and classid = ${workerLockClass} and objid = ${key}`).length > 0

const freeOf = async (id: string) => (await testDb().sql<[{ free: number }]>`select free from taskcast.workers where id = ${id}`)[0]?.free

async function insertOne(overrides: Partial<NewTask> & { queue: string }) {
  const tenant = await newTenant()
  const [task] = await taskInsert(testDb().sql, [newTask(tenant.id, overrides)])
  return task!
}

/** The hand-off notices sent to a worker from now on, as they arrive. */
async function noticesTo(workerId: string) {
  const notices: string[] = []
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-handoff', log: quietLog })
  listener.on(handoffChannel(workerId), (payload) => notices.push(payload))
  await listener.start()
  cleanups.push(() => listener.stop())
  return notices
}

describe('handing a submitted task to a waiting worker', () => {
  test('a live worker with a free slot gets the task already running, both events logged, and the task whole on its channel', async () => {
    const queue = uniqueName('q')
    const worker = await registered(queue, 2)
    const notices = await noticesTo(worker.id)

    const task = await insertOne({ queue, payload: { seconds: 0, note: 'hello' } })
    expect(task).toMatchObject({ status: 'running', attempt: 1, lockedBy: worker.id, lastSeq: 2 })
    expect(task.startedAt).toBeInstanceOf(Date)
    expect(task.leaseUntil!.getTime()).toBeGreaterThan(Date.now() + 25_000)
    expect(await taskGet(testDb().sql, task.tenantId, task.id)).toMatchObject({ status: 'running', attempt: 1, lockedBy: worker.id })
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    expect(events.map((event) => event.data)).toEqual([{ status: 'queued', attempt: 0 }, { status: 'running', attempt: 1 }])
    expect(await freeOf(worker.id)).toBe(1)

    await until(() => notices.length === 1, 5000, 'the hand-off notice')
    const notice = JSON.parse(notices[0]!)
    expect(notice).toMatchObject({
      id: task.id, lockedBy: worker.id, tenantId: task.tenantId, type: 'demo.sleep', queue, attempt: 1,
      payload: { seconds: 0, note: 'hello' }, maxAttempts: task.maxAttempts, timeoutSeconds: task.timeoutSeconds,
    })
    expect(new Date(notice.startedAt).getTime()).toBe(task.startedAt!.getTime())
  })

  test('a task too big for a notice is only named in it', async () => {
    const queue = uniqueName('q')
    const worker = await registered(queue, 1)
    const notices = await noticesTo(worker.id)
    const task = await insertOne({ queue, payload: { seconds: 0, text: 'x'.repeat(10_000) } })
    expect(task.status).toBe('running')
    await until(() => notices.length === 1, 5000, 'the hand-off notice')
    expect(JSON.parse(notices[0]!)).toEqual({ id: task.id, lockedBy: worker.id })
  })

  test('no hand-off without a free slot, to a worker that is gone or silent, ahead of a waiting task, or for later', async () => {
    const { sql } = testDb()
    const full = uniqueName('q')
    await registered(full, 0)
    expect(await insertOne({ queue: full })).toMatchObject({ status: 'queued', attempt: 0, lockedBy: null })

    const gone = uniqueName('q')
    const dead = await registered(gone, 5)
    await dead.release()
    expect(await insertOne({ queue: gone })).toMatchObject({ status: 'queued', lockedBy: null })
    expect(await freeOf(dead.id)).toBe(5)
    expect(await workersPruneGone(sql)).toBeGreaterThanOrEqual(1)
    expect(await freeOf(dead.id)).toBeUndefined()

    // Its lock held, but no heartbeat lately: its process may be stopped.
    const silentQueue = uniqueName('q')
    const silent = await registered(silentQueue, 5)
    await sql`update taskcast.workers set alive_until = now() - interval '1 second' where id = ${silent.id}`
    expect(await insertOne({ queue: silentQueue })).toMatchObject({ status: 'queued', lockedBy: null })
    expect(await freeOf(silent.id)).toBe(5)

    const busy = uniqueName('q')
    const waiting = await registered(busy, 5)
    const earlier = await taskInsert(sql, [newTask((await newTenant()).id, { queue: busy, runAt: new Date(Date.now() - 1000) })])
    expect(earlier[0]!.status).toBe('queued')
    expect(await insertOne({ queue: busy })).toMatchObject({ status: 'queued' })
    // A waiting task of lower priority does not hold back one of higher.
    expect(await insertOne({ queue: busy, priority: 5 })).toMatchObject({ status: 'running', lockedBy: waiting.id })

    const later = uniqueName('q')
    await registered(later, 5)
    expect(await insertOne({ queue: later, runAt: new Date(Date.now() + 60_000) })).toMatchObject({ status: 'queued' })
  })

  test('each free slot takes one task: concurrent submissions past them are queued', async () => {
    const queue = uniqueName('q')
    const worker = await registered(queue, 3)
    const tenant = await newTenant()
    const tasks = await Promise.all(Array.from({ length: 8 }, () => taskInsert(testDb().sql, [newTask(tenant.id, { queue })])))
    const handed = tasks.flat().filter((task) => task.status === 'running')
    expect(handed.length).toBeLessThanOrEqual(3)
    expect(handed.length).toBeGreaterThanOrEqual(1)
    expect(await freeOf(worker.id)).toBe(3 - handed.length)
  })
})

describe('a worker taking hand-offs', () => {
  test('an idle worker says it is free, runs what it is handed, and is free again after', async () => {
    const queue = uniqueName('q')
    const { workerId, runEnd, stop } = await startWorker({ queues: [queue], concurrency: 4 })
    cleanups.push(() => stop())
    await until(async () => (await freeOf(workerId)) === 4, 5000, 'the worker to say it is free')
    const task = await insertOne({ queue })
    expect(task).toMatchObject({ status: 'running', lockedBy: workerId })
    expect(await runEnd(task.id)).toBe('succeeded')
    await until(async () => (await freeOf(workerId)) === 4, 5000, 'the slot to be free again')
  })

  test('a task handed over without its notice (lost with the connection) is found and run', async () => {
    const queue = uniqueName('q')
    const { workerId, runEnd, stop } = await startWorker({ queues: [queue], leaseSeconds: 3 })
    cleanups.push(() => stop())
    const task = await insertOne({ queue, runAt: new Date(Date.now() + 60_000) })
    // As a hand-off leaves it, but no notice is sent.
    await testDb().sql`
      update taskcast.tasks set status = 'running', attempt = 1, locked_by = ${workerId}, started_at = now(),
        lease_until = now() + interval '3 seconds', last_seq = last_seq + 1
      where id = ${task.id}`
    expect(await runEnd(task.id)).toBe('succeeded')
    expect(await taskGet(testDb().sql, task.tenantId, task.id)).toMatchObject({ status: 'succeeded', attempt: 1 })
  })

  test('a stopping worker leaves the registry and hands back what it was handed but did not start', async () => {
    const queue = uniqueName('q')
    const { workerId, stop } = await startWorker({ queues: [queue] })
    await until(async () => (await freeOf(workerId)) !== undefined, 5000, 'the worker to register')
    const task = await insertOne({ queue, runAt: new Date(Date.now() + 60_000) })
    await testDb().sql`
      update taskcast.tasks set status = 'running', attempt = 1, locked_by = ${workerId}, started_at = now(),
        lease_until = now() + interval '30 seconds', last_seq = last_seq + 1
      where id = ${task.id}`
    await stop()
    expect(await freeOf(workerId)).toBeUndefined()
    expect(await taskGet(testDb().sql, task.tenantId, task.id)).toMatchObject({ status: 'queued', attempt: 0, lockedBy: null })
  })
})

describe('hand-offs between real processes', () => {
  let api: Awaited<ReturnType<typeof spawnApi>>
  let tenant: Awaited<ReturnType<typeof newTenant>>
  beforeAll(async () => {
    tenant = await newTenant()
    api = await spawnApi()
  }, 30_000)
  afterAll(() => killAll())

  const submit = async (queue: string) => {
    const response = await postTask(api.url, tenant.auth, { type: 'demo.noop', payload: {}, queue })
    expect(response.status).toBe(202)
    return await response.json() as { id: string; status: string; attempt: number }
  }
  const workerEntry = async (queue: string) =>
    (await testDb().sql<Array<{ id: string; free: number; lockKey: number }>>`
      select id, free, lock_key from taskcast.workers where ${queue} = any(queues)`)[0]

  test('a submission to an idle worker is answered running, and runs', async () => {
    const queue = uniqueName('idle')
    await spawnWorker({ WORKER_QUEUES: queue, WORKER_CONCURRENCY: '2' })
    await until(async () => (await workerEntry(queue))?.free === 2, 10_000, 'the worker to say it is free')
    const task = await submit(queue)
    expect(task).toMatchObject({ status: 'running', attempt: 1 })
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))?.status === 'succeeded', 10_000, 'the task to succeed')
  }, 30_000)

  test('a worker killed with -9 while idle is handed nothing: the next task waits for a live worker and runs at its first attempt', async () => {
    const queue = uniqueName('killed-idle')
    const doomed = await spawnWorker({ WORKER_QUEUES: queue })
    await until(async () => ((await workerEntry(queue))?.free ?? 0) > 0, 10_000, 'the worker to say it is free')
    const { lockKey } = (await workerEntry(queue))!
    doomed.proc.kill('SIGKILL')
    await doomed.proc.exited
    // Its database session ends (and its lock with it) once PostgreSQL sees the connection close.
    await until(async () => !(await lockHeld(lockKey)), 10_000, 'the killed worker\'s session to end')
    const task = await submit(queue)
    expect(task).toMatchObject({ status: 'queued', attempt: 0 })
    await spawnWorker({ WORKER_QUEUES: queue })
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))?.status === 'succeeded', 10_000, 'the task to succeed')
    expect((await taskGet(testDb().sql, tenant.id, task.id))!.attempt).toBe(1)
  }, 30_000)

  test('a worker stopped with SIGSTOP keeps its lock but falls silent, and is handed nothing: the next task goes to a live worker', async () => {
    const queue = uniqueName('stopped')
    const stopped = await spawnWorker({ WORKER_QUEUES: queue })
    cleanups.push(async () => void stopped.proc.kill('SIGCONT'))
    await until(async () => ((await workerEntry(queue))?.free ?? 0) > 0, 10_000, 'the worker to say it is free')
    const { id, lockKey } = (await workerEntry(queue))!
    const aliveUntil = async () =>
      (await testDb().sql<[{ aliveUntil: Date; ahead: boolean }]>`
        select alive_until, alive_until > now() as ahead from taskcast.workers where id = ${id}`)[0]
    const first = (await aliveUntil()).aliveUntil
    await until(async () => (await aliveUntil()).aliveUntil > first, 5000, 'a heartbeat')

    stopped.proc.kill('SIGSTOP')
    await until(async () => !(await aliveUntil()).ahead, 10_000, 'the stopped worker to fall silent')
    expect(await lockHeld(lockKey)).toBe(true)
    const task = await submit(queue)
    expect(task).toMatchObject({ status: 'queued', attempt: 0 })
    await spawnWorker({ WORKER_QUEUES: queue })
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))?.status === 'succeeded', 10_000, 'the task to succeed')
    expect((await taskGet(testDb().sql, tenant.id, task.id))!).toMatchObject({ attempt: 1, lockedBy: null })
  }, 30_000)
})
