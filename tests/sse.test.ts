import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Channel, createSql, type Sql } from '../db/client.ts'
import { createNotifier, notifyAfterCommit } from '../db/notify.ts'
import { taskClaim, taskProgress, taskSucceed, type Lease } from '../db/task-leases.ts'
import { taskInsert, type TaskRow } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { announcers, newTask, newTenant, quietLog, startApp, until } from './support/fixtures.ts'
import { followSse, isTerminalEvent, readSse } from './support/sse.ts'

let api: Awaited<ReturnType<typeof startApp>>
let tenant: Awaited<ReturnType<typeof newTenant>>

beforeAll(async () => {
  api = await startApp({ ssePingMs: 100 })
  tenant = await newTenant()
})
afterAll(() => api.stop())

/** Plays the worker's part through the same db functions: claim, report progress, succeed. */
async function claim(task: TaskRow): Promise<Lease> {
  const [claimed] = await taskClaim(testDb().sql, { workerId: 'sse-test', queues: [task.queue], limit: 1, leaseSeconds: 30 })
  return { id: claimed!.id, attempt: claimed!.attempt, workerId: 'sse-test' }
}

const openStream = (taskId: string, headers: Record<string, string> = {}, init: RequestInit = {}) =>
  api.request(`/v1/tasks/${taskId}/events`, { headers: { ...tenant.auth, ...headers }, ...init })

async function finishedTask(progressReports = 2) {
  const [task] = await taskInsert(testDb().sql, [newTask(tenant.id)])
  const lease = await claim(task!)
  for (let i = 1; i <= progressReports; i++) await taskProgress(testDb().sql, lease, { percent: i * 10, message: `step ${i}` })
  await taskSucceed(testDb().sql, lease, { answer: 42 })
  return task!
}

describe('GET /v1/tasks/:id/events', () => {
  test('replays stored events in the spec format, retry first, and ends after the terminal event', async () => {
    const task = await finishedTask(2)
    const response = await openStream(task.id)
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toStartWith('text/event-stream')
    expect(response.headers.get('cache-control')).toContain('no-cache')
    const raw = await response.text()
    expect(raw).toStartWith('retry: 2000\n\n')
    expect(raw).toContain(`id: 3\nevent: progress\ndata: {"taskId":"${task.id}","percent":10,"message":"step 1","at":"`)
    expect(raw).toEndWith('"}\n\n')

    const read = await readSse(await openStream(task.id))
    expect(read.ended).toBe(true)
    expect(read.retry).toBe(2000)
    expect(read.events.map((event) => [event.id, event.event, event.data.status ?? event.data.percent])).toEqual([
      ['1', 'status', 'queued'], ['2', 'status', 'running'], ['3', 'progress', 10], ['4', 'progress', 20], ['5', 'status', 'succeeded'],
    ])
    const last = read.events.at(-1)!.data
    expect(last).toEqual({ taskId: task.id, status: 'succeeded', attempt: 1, result: { answer: 42 }, at: expect.any(String) })
    expect(new Date(last.at).toISOString()).toBe(last.at)
  })

  test('continues live after the replay until the task finishes', async () => {
    const { sql } = testDb()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const response = await openStream(task!.id)
    const reading = readSse(response)
    const lease = await claim(task!)
    await taskProgress(sql, lease, { percent: 50 })
    await taskSucceed(sql, lease, null)
    const read = await reading
    expect(read.ended).toBe(true)
    expect(read.events.map((event) => Number(event.id))).toEqual([1, 2, 3, 4])
    expect(read.events.at(-1)!.data).toMatchObject({ status: 'succeeded', result: null })
  })

  test('resumes after Last-Event-ID with no gap and no duplicate', async () => {
    const task = await finishedTask(4)
    const read = await readSse(await openStream(task.id, { 'last-event-id': '3' }))
    expect(read.events.map((event) => Number(event.id))).toEqual([4, 5, 6, 7])
    // A new EventSource cannot send the header: the lastEventId query parameter does the same.
    const byQuery = await readSse(await api.request(`/v1/tasks/${task.id}/events?lastEventId=5`, { headers: tenant.auth }))
    expect(byQuery.events.map((event) => Number(event.id))).toEqual([6, 7])
  })

  /**
   * Opens a stream while 300 progress reports and the success are written through `sql`, and
   * checks it got every event once, in order, exactly as a replay reads them from the log.
   */
  async function expectEveryEventOnce(sql: Sql) {
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const lease = await claim(task!)
    let written = 0
    const writer = (async () => {
      for (let i = 0; i < 300; i++) {
        await taskProgress(sql, lease, { percent: (i / 3) | 0, message: `report ${i}` })
        written++
      }
      await taskSucceed(sql, lease, { done: true })
    })()
    await until(() => written >= 50, 10_000, 'the first 50 reports')
    const read = await readSse(await openStream(task!.id))
    await writer
    expect(read.events.map((event) => Number(event.id))).toEqual(Array.from({ length: 303 }, (_, i) => i + 1))
    const progress = read.events.filter((event) => event.event === 'progress')
    expect(progress.map((event) => event.data.message)).toEqual(Array.from({ length: 300 }, (_, i) => `report ${i}`))
    expect(progress[148]!.data).toEqual({ taskId: task!.id, percent: 49, message: 'report 148', at: expect.any(String) })
    expect(isTerminalEvent(read.events.at(-1)!)).toBe(true)
    expect(read.events.at(-1)!.data).toMatchObject({ status: 'succeeded', result: { done: true } })
    expect((await readSse(await openStream(task!.id))).events).toEqual(read.events)
  }

  test('loses and repeats nothing while events are written as the client connects', async () => {
    await expectEveryEventOnce(testDb().sql)
  })

  test('as a worker writes (each event handed over whole after its commit), loses and repeats nothing', async () => {
    const notifier = createNotifier({ url: testDb().url, applicationName: 'taskcast-test-notify', log: quietLog })
    const sql = notifyAfterCommit(createSql(testDb().url, { max: 2, applicationName: 'taskcast-test-worker-writes' }), notifier)
    try {
      await expectEveryEventOnce(sql)
    } finally {
      await sql.end()
      await notifier.end()
    }
  })

  test('sends the next event at once when a notification hands it over whole, without reading the log', async () => {
    const { sql } = testDb()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const follow = followSse(await openStream(task!.id))
    try {
      // Once the stream has sent seq 1 it waits for seq 2, which is not in the log: only the
      // notification has it.
      await follow.waitFor((read) => read.events.length === 1, 5000, 'the replay of the queued event')
      const at = new Date().toISOString()
      await sql`select pg_notify(${Channel.taskEvent}, ${JSON.stringify({
        task: task!.id, tenant: tenant.id, seq: 2, id: 1, kind: 'progress', data: { percent: 7, message: 'carried' }, at,
      })})`
      await follow.waitFor((read) => read.events.length === 2, 5000, 'the carried event')
      expect(follow.read.events.map((event) => [event.id, event.event, event.data])).toEqual([
        ['1', 'status', expect.objectContaining({ status: 'queued' })],
        ['2', 'progress', { taskId: task!.id, percent: 7, message: 'carried', at }],
      ])
    } finally {
      await follow.close()
    }
  })

  test('answers 204 when resuming past the end of a finished task, so an EventSource stops', async () => {
    const task = await finishedTask(1)
    const response = await openStream(task.id, { 'last-event-id': '4' })
    expect(response.status).toBe(204)
  })

  test('sends a ": ping" comment at the configured interval while quiet', async () => {
    const [task] = await taskInsert(testDb().sql, [newTask(tenant.id)])
    const read = await readSse(await openStream(task!.id), (r) => r.comments.length >= 2)
    expect(read.comments.slice(0, 2)).toEqual(['ping', 'ping'])
    expect(read.events.map((event) => event.data.status)).toEqual(['queued'])
  })

  test('rejects a Last-Event-ID that is not an event id with 400', async () => {
    const [task] = await taskInsert(testDb().sql, [newTask(tenant.id)])
    const response = await openStream(task!.id, { 'last-event-id': 'abc' })
    expect(response.status).toBe(400)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
  })

  test('survives a malformed notification and keeps streaming', async () => {
    const { sql } = testDb()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const reading = readSse(await openStream(task!.id))
    await sql`select pg_notify(${Channel.taskEvent}, 'not json at all')`
    await sql`select pg_notify(${Channel.taskEvent}, ${JSON.stringify({ task: task!.id })})`
    const lease = await claim(task!)
    await taskSucceed(sql, lease, 1)
    expect((await reading).events.map((event) => event.data.status)).toEqual(['queued', 'running', 'succeeded'])
  })
})

describe('the LISTEN connection', () => {
  test('comes back after its backend is killed, and streams re-read what they missed meanwhile', async () => {
    const { sql } = testDb()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const reading = readSse(await openStream(task!.id))
    const killed = await sql`
      select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'taskcast-test-api'`
    expect(killed.length).toBe(1)
    // Written while the listener is down or reconnecting: these NOTIFYs may never arrive.
    const lease = await claim(task!)
    await taskSucceed(sql, lease, { after: 'reconnect' })
    const read = await reading
    expect(read.events.map((event) => event.data.status)).toEqual(['queued', 'running', 'succeeded'])
    await until(() => api.listener.connected, 10_000, 'the listener to reconnect')
  })

  test('says again that it listens once the connection saying so is lost, and streams re-read what no notice announced', async () => {
    const { sql } = testDb()
    const notifier = createNotifier({ url: testDb().url, applicationName: 'taskcast-test-notify', log: quietLog })
    const writes = notifyAfterCommit(createSql(testDb().url, { max: 2, applicationName: 'taskcast-test-worker-writes' }), notifier)
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const follow = followSse(await openStream(task!.id))
    try {
      await follow.waitFor((read) => read.events.length === 1, 5000, 'the replay of the queued event')
      await api.hub.listening()
      expect(await announcers()).toBe(1)
      const [announcer] = await sql<[{ pid: number }]>`
        select pid from pg_stat_activity where application_name = 'taskcast-test-api-announce'`
      await sql`select pg_terminate_backend(${announcer!.pid})`
      await until(async () => (await sql`select 1 from pg_stat_activity where pid = ${announcer!.pid}`).length === 0,
        5000, 'the announcing backend to end')
      // Written through a notifier, as a worker writes: while nobody says it listens, no notice goes out.
      const [claimed] = await taskClaim(writes, { workerId: 'sse-test', queues: [task!.queue], limit: 1, leaseSeconds: 30 })
      await taskSucceed(writes, { id: claimed!.id, attempt: claimed!.attempt, workerId: 'sse-test' }, { after: 'announcing again' })
      await follow.waitFor((read) => read.events.some(isTerminalEvent), 10_000, 'the running and succeeded events')
      expect(follow.read.events.map((event) => event.data.status)).toEqual(['queued', 'running', 'succeeded'])
      await until(async () => (await announcers()) === 1, 5000, 'the announcement to be made again')
    } finally {
      await follow.close()
      await writes.end()
      await notifier.end()
    }
  })
})

describe('fan-out', () => {
  test('many clients share the one LISTEN connection, and each that goes away releases its subscription', async () => {
    const { sql } = testDb()
    const server = api.app.listen({ port: 0, hostname: '127.0.0.1' })
    try {
      const base = `http://127.0.0.1:${server.server!.port}`
      // Every stream of the tests above has ended or been dropped, and let go of its subscription.
      expect(api.hub.size).toBe(0)
      const [task] = await taskInsert(sql, [newTask(tenant.id)])
      const listenersBefore = await sql`select count(*)::int as n from pg_stat_activity where application_name = 'taskcast-test-api'`
      const clients = Array.from({ length: 20 }, () => new AbortController())
      const responses = await Promise.all(clients.map((client) =>
        fetch(`${base}/v1/tasks/${task!.id}/events`, { headers: tenant.auth, signal: client.signal })))
      // Hold every stream open until its first event has arrived.
      await Promise.all(responses.map(async (response) => {
        const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
        for (let text = ''; !text.includes('id: 1\n');) text += (await reader.read()).value ?? ''
      }))
      expect(api.hub.size).toBe(20)
      const listenersDuring = await sql`select count(*)::int as n from pg_stat_activity where application_name = 'taskcast-test-api'`
      expect(listenersDuring[0]!.n).toBe(listenersBefore[0]!.n)
      for (const client of clients) client.abort()
      await until(() => api.hub.size === 0, 5000, 'every subscription to be released')
    } finally {
      server.stop(true)
    }
  })
})
