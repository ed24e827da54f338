import { afterEach, describe, expect, test } from 'bun:test'
import { taskEventsAfter } from '../db/task-events.ts'
import { taskClaim, taskLeaseRenew, taskRescue } from '../db/task-leases.ts'
import { taskGet, taskInsert, type NewTask } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, startWorker, uniqueName, until } from './support/fixtures.ts'

const stops: Array<() => Promise<void>> = []
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()))
})

async function inserted(overrides: Partial<NewTask> = {}) {
  const tenant = await newTenant()
  const [task] = await taskInsert(testDb().sql, [newTask(tenant.id, overrides)])
  return { tenant, task: task! }
}

const claimOne = async (queue: string, workerId = 'w1', leaseSeconds = 30) =>
  (await taskClaim(testDb().sql, { workerId, queues: [queue], limit: 1, leaseSeconds }))[0]!

const expireLease = (id: string) =>
  testDb().sql`update taskcast.tasks set lease_until = now() - interval '1 second' where id = ${id}`

describe('leases', () => {
  test('one statement renews every lease a worker holds, and only its own', async () => {
    const { sql } = testDb()
    const queue = uniqueName('q')
    const tenant = await newTenant()
    const tasks = await taskInsert(sql, [newTask(tenant.id, { queue }), newTask(tenant.id, { queue }), newTask(tenant.id, { queue })])
    const mine = await taskClaim(sql, { workerId: 'mine', queues: [queue], limit: 2, leaseSeconds: 1 })
    const theirs = await claimOne(queue, 'theirs', 1)
    const states = await taskLeaseRenew(sql, 'mine', [...mine.map((task) => task.id), theirs.id], 60)
    expect(states.map((state) => state.id).sort()).toEqual(mine.map((task) => task.id).sort())
    const rows = await Promise.all(tasks.map((task) => taskGet(sql, tenant.id, task.id)))
    for (const row of rows) {
      const renewed = row!.lockedBy === 'mine'
      expect(row!.leaseUntil!.getTime() > Date.now() + 30_000).toBe(renewed)
    }
  })

  test('an expired lease is taken back: the task is queued again, the lost attempt counted, the reason recorded', async () => {
    const { task } = await inserted()
    await claimOne(task.queue)
    await expireLease(task.id)
    // Other tests' tasks may have expired leases too: look for this one.
    const rescued = (await taskRescue(testDb().sql)).find((row) => row.id === task.id)
    expect(rescued).toMatchObject({ id: task.id, status: 'queued', attempt: 1, lockedBy: null, error: { name: 'LeaseExpired' } })
    const events = await taskEventsAfter(testDb().sql, task.id, 0)
    expect(events.at(-1)!.data).toMatchObject({ status: 'queued', attempt: 1, reason: expect.stringContaining('lease expired') })
    expect((await claimOne(task.queue, 'w2')).attempt).toBe(2)
  })

  test('an expired lease on the last attempt fails the task; one whose cancel was requested ends canceled', async () => {
    const { task: last } = await inserted({ maxAttempts: 1 })
    const { tenant, task: canceled } = await inserted()
    await claimOne(last.queue)
    await claimOne(canceled.queue)
    await testDb().sql`update taskcast.tasks set cancel_requested = true where id = ${canceled.id}`
    await Promise.all([expireLease(last.id), expireLease(canceled.id)])
    await taskRescue(testDb().sql)
    expect((await taskGet(testDb().sql, last.tenantId, last.id))!.status).toBe('failed')
    expect((await taskGet(testDb().sql, tenant.id, canceled.id))!.status).toBe('canceled')
  })

  test('rescuers running at once take each task back exactly once', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    await taskInsert(sql, Array.from({ length: 200 }, () => newTask(tenant.id, { queue })))
    const claimed = await taskClaim(sql, { workerId: 'dead', queues: [queue], limit: 200, leaseSeconds: 30 })
    await sql`update taskcast.tasks set lease_until = now() - interval '1 second' where queue = ${queue}`
    const rounds = await Promise.all(Array.from({ length: 5 }, async () => {
      const ids: string[] = []
      for (let batch = await taskRescue(sql, 7); batch.length; batch = await taskRescue(sql, 7)) ids.push(...batch.map((t) => t.id))
      return ids
    }))
    const mine = new Set(claimed.map((task) => task.id))
    const all = rounds.flat().filter((id) => mine.has(id)) // other tests may have left expired leases
    expect(all.length).toBe(200)
    expect(new Set(all)).toEqual(mine)
  })
})

describe('the worker and its leases', () => {
  async function workerOn(queue: string, leaseSeconds = 30) {
    const started = await startWorker({ queues: [queue], leaseSeconds })
    stops.push(() => started.stop())
    return started
  }

  test('a timeout aborts the handler and fails the attempt with TimeoutError, then retries per policy', async () => {
    const { tenant, task } = await inserted({ timeoutSeconds: 1, maxAttempts: 2, payload: { seconds: 30, steps: 30 } })
    const { runEnd } = await workerOn(task.queue)
    expect(await runEnd(task.id)).toBe('retrying')
    expect(await runEnd(task.id)).toBe('failed')
    expect((await taskGet(testDb().sql, tenant.id, task.id))!.error)
      .toEqual({ name: 'TimeoutError', message: 'timed out after 1 s', retryable: true })
  })

  test('learns of a cancel at its next lease renewal when the NOTIFY never came', async () => {
    const { tenant, task } = await inserted({ payload: { seconds: 30, steps: 30 } })
    const { runEnd } = await workerOn(task.queue, 1)
    const ended = runEnd(task.id)
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))!.status === 'running', 10_000, 'running')
    // Set the flag as the API does, but without its NOTIFY.
    await testDb().sql`update taskcast.tasks set cancel_requested = true where id = ${task.id}`
    expect(await ended).toBe('canceled')
    expect((await taskGet(testDb().sql, tenant.id, task.id))!.status).toBe('canceled')
  })

  test('stops the handler of a task whose lease was taken over, and writes nothing for it', async () => {
    const { tenant, task } = await inserted({ payload: { seconds: 30, steps: 30 } })
    const { runEnd } = await workerOn(task.queue, 1)
    const ended = runEnd(task.id)
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))!.status === 'running', 10_000, 'running')
    // Another worker has taken it over (as after a rescue and a new claim).
    await testDb().sql`update taskcast.tasks set locked_by = 'another-worker', attempt = 2, lease_until = now() + interval '1 hour' where id = ${task.id}`
    expect(await ended).toBe('lease-lost')
    expect(await taskGet(testDb().sql, tenant.id, task.id)).toMatchObject({ status: 'running', lockedBy: 'another-worker', attempt: 2 })
  })
})
