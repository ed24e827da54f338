import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { taskClaim, taskProgress, taskSucceed } from '../db/task-leases.ts'
import { taskInsert, type TaskRow } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, startApp, uniqueName } from './support/fixtures.ts'
import { followSse, readSse, type SseRead } from './support/sse.ts'

let api: Awaited<ReturnType<typeof startApp>>
let tenant: Awaited<ReturnType<typeof newTenant>>

beforeAll(async () => {
  api = await startApp({ ssePingMs: 50 })
  tenant = await newTenant()
})
afterAll(() => api.stop())

const openTenantStream = (query = '', headers: Record<string, string> = tenant.auth) =>
  api.request(`/v1/events${query}`, { headers })

/** The global ids of a tenant's events after `afterId`, as stored. */
async function storedEventIds(tenantId: string, afterId: number): Promise<number[]> {
  const rows = await testDb().sql<{ id: string }[]>`
    select id from taskcast.task_events where tenant_id = ${tenantId} and id > ${afterId} order by id`
  return rows.map((row) => Number(row.id))
}

/** Plays a worker's part through the same db functions: claim, one progress report, succeed. */
async function runToSuccess(task: TaskRow) {
  const { sql } = testDb()
  const [claimed] = await taskClaim(sql, { workerId: 'tenant-stream-test', queues: [task.queue], limit: 1, leaseSeconds: 30 })
  const lease = { id: claimed!.id, attempt: claimed!.attempt, workerId: 'tenant-stream-test' }
  await taskProgress(sql, lease, { percent: 50, message: 'half' })
  await taskSucceed(sql, lease, { done: true })
}

const ids = (read: SseRead) => read.events.map((event) => Number(event.id))

describe('GET /v1/events', () => {
  test('streams every event of the tenant\'s tasks from now on, with global ids, type and queue, and none of another tenant\'s', async () => {
    const { sql } = testDb()
    const other = await newTenant()
    const stream = followSse(await openTenantStream())
    await stream.waitFor((read) => read.retry === 2000, 5000, 'retry line')

    const [theirs] = await taskInsert(sql, [newTask(other.id)])
    await runToSuccess(theirs!)
    const queue = uniqueName('q')
    const [task] = await taskInsert(sql, [newTask(tenant.id, { queue, type: 'demo.primes', payload: { limit: 100 } })])
    await runToSuccess(task!)

    const read = await stream.waitFor((r) => r.events.some((e) => e.data.status === 'succeeded'), 10_000, 'the succeeded event')
    await stream.close()
    expect(read.events.map((e) => [e.event, e.data.status ?? e.data.percent])).toEqual([
      ['status', 'queued'], ['status', 'running'], ['progress', 50], ['status', 'succeeded'],
    ])
    for (const event of read.events) {
      expect(event.data).toMatchObject({ taskId: task!.id, type: 'demo.primes', queue, at: expect.any(String) })
    }
    expect(read.events.map((e) => e.data.seq)).toEqual([1, 2, 3, 4])
    const stored = await storedEventIds(tenant.id, ids(read)[0]! - 1)
    expect(ids(read)).toEqual(stored.slice(0, 4))
  })

  test('filters by type and by queue', async () => {
    const { sql } = testDb()
    const queue = uniqueName('q')
    const stream = followSse(await openTenantStream(`?type=demo.primes&queue=${queue}`))
    await stream.waitFor((read) => read.retry === 2000, 5000, 'retry line')
    const [wanted] = await taskInsert(sql, [newTask(tenant.id, { queue, type: 'demo.primes', payload: { limit: 10 } })])
    await taskInsert(sql, [newTask(tenant.id, { queue }), newTask(tenant.id, { type: 'demo.primes', payload: { limit: 10 } })])
    const [last] = await taskInsert(sql, [newTask(tenant.id, { queue, type: 'demo.primes', payload: { limit: 20 } })])
    const read = await stream.waitFor((r) => r.events.some((e) => e.data.taskId === last!.id), 10_000, 'the last task')
    await stream.close()
    expect(read.events.map((e) => e.data.taskId)).toEqual([wanted!.id, last!.id])
  })

  test('resumes after Last-Event-ID (header or lastEventId) with nothing skipped or repeated', async () => {
    const { sql } = testDb()
    const own = await newTenant()
    const first = followSse(await openTenantStream('', own.auth))
    await first.waitFor((read) => read.retry === 2000, 5000, 'retry line')
    await taskInsert(sql, [newTask(own.id), newTask(own.id)])
    const seen = await first.waitFor((read) => read.events.length === 2, 10_000, 'two events')
    await first.close()
    const lastSeen = ids(seen).at(-1)!

    // Written while no stream is open.
    await taskInsert(sql, [newTask(own.id), newTask(own.id), newTask(own.id)])
    const expected = await storedEventIds(own.id, lastSeen)
    expect(expected).toHaveLength(3)

    const byHeader = await readSse(await openTenantStream('', { ...own.auth, 'last-event-id': String(lastSeen) }), (r) => r.events.length >= 3)
    expect(ids(byHeader)).toEqual(expected)
    const byQuery = await readSse(await openTenantStream(`?lastEventId=${lastSeen}`, own.auth), (r) => r.events.length >= 3)
    expect(ids(byQuery)).toEqual(expected)
    expect(ids(seen).concat(ids(byHeader))).toEqual(await storedEventIds(own.id, 0))
  })

  test('does not send an event before an older, slower transaction has committed its own', async () => {
    const { sql } = testDb()
    const own = await newTenant()
    const stream = followSse(await openTenantStream('', own.auth))
    await stream.waitFor((read) => read.retry === 2000, 5000, 'retry line')

    let commitSlow!: () => void
    const slowCanCommit = new Promise<void>((resolve) => (commitSlow = resolve))
    let slowInserted!: () => void
    const slowHasInserted = new Promise<void>((resolve) => (slowInserted = resolve))
    // The slow transaction takes the lower event id, then waits before it commits.
    const slow = sql.begin(async (tx) => {
      const [task] = await taskInsert(tx, [newTask(own.id)])
      slowInserted()
      await slowCanCommit
      return task!
    })
    await slowHasInserted
    const [fast] = await taskInsert(sql, [newTask(own.id)])
    // The fast event is committed and notified; let the stream see it several times over.
    const pings = stream.read.comments.length
    await stream.waitFor((read) => read.comments.length >= pings + 4, 5000, 'four pings')
    expect(stream.read.events).toEqual([])

    commitSlow()
    const slowTask = await slow
    const read = await stream.waitFor((r) => r.events.length >= 2, 10_000, 'both events')
    await stream.close()
    expect(read.events.map((e) => e.data.taskId)).toEqual([slowTask.id, fast!.id])
    expect(ids(read)).toEqual(await storedEventIds(own.id, 0))
  })

  test('under concurrent writers, delivers every event once, in increasing id order', async () => {
    const { sql } = testDb()
    const own = await newTenant()
    const stream = followSse(await openTenantStream('', own.auth))
    await stream.waitFor((read) => read.retry === 2000, 5000, 'retry line')
    const queue = uniqueName('q')
    // 8 writers, each inserting 25 small batches; claims and progress interleave with them.
    await Promise.all(Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 25; i++) {
        await taskInsert(sql, [newTask(own.id, { queue }), newTask(own.id, { queue })])
        const claimed = await taskClaim(sql, { workerId: 'tenant-stream-test', queues: [queue], limit: 1, leaseSeconds: 30 })
        for (const task of claimed) {
          await taskProgress(sql, { id: task.id, attempt: task.attempt, workerId: 'tenant-stream-test' }, { percent: 10 })
        }
      }
    }))
    const expected = await storedEventIds(own.id, 0)
    expect(expected.length).toBeGreaterThanOrEqual(400)
    const read = await stream.waitFor((r) => r.events.length >= expected.length, 20_000, `${expected.length} events`)
    await stream.close()
    expect(ids(read)).toEqual(expected)
  }, 30_000)

  test('opens with a tenant stream token; a task token, a bad token or no credentials are refused', async () => {
    const created = await api.request('/v1/stream-tokens', { method: 'POST', headers: tenant.auth, json: {} })
    expect(created.status).toBe(201)
    const { token } = await created.json() as { token: string }
    const withToken = await openTenantStream(`?token=${encodeURIComponent(token)}`, {})
    expect(withToken.status).toBe(200)
    expect(withToken.headers.get('content-type')).toStartWith('text/event-stream')
    await withToken.body!.cancel()

    const [task] = await taskInsert(testDb().sql, [newTask(tenant.id)])
    const taskToken = await (await api.request('/v1/stream-tokens', { method: 'POST', headers: tenant.auth, json: { taskId: task!.id } })).json() as { token: string }
    const refused = await openTenantStream(`?token=${encodeURIComponent(taskToken.token)}`, {})
    expect(refused.status).toBe(403)
    expect(refused.headers.get('content-type')).toBe('application/problem+json')

    expect((await openTenantStream('?token=nonsense', {})).status).toBe(401)
    expect((await openTenantStream('', {})).status).toBe(401)
    const badId = await openTenantStream('', { ...tenant.auth, 'last-event-id': 'abc' })
    expect(badId.status).toBe(400)
    expect((await badId.json() as { errors: unknown[] }).errors).toEqual([{ path: '/headers/last-event-id', message: 'must be a whole number' }])
    expect((await openTenantStream('?queue=Not%20A%20Queue')).status).toBe(400)
  })

  test('a client that goes away releases its subscription', async () => {
    const before = api.hub.size
    const controller = new AbortController()
    const response = await api.request('/v1/events', { headers: tenant.auth, signal: controller.signal })
    const stream = followSse(response)
    await stream.waitFor((read) => read.retry === 2000, 5000, 'retry line')
    expect(api.hub.size).toBe(before + 1)
    controller.abort()
    await stream.close()
    for (let i = 0; i < 100 && api.hub.size !== before; i++) await Bun.sleep(10)
    expect(api.hub.size).toBe(before)
  })
})
