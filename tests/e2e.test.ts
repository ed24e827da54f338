import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { taskEventsAfter } from '../db/task-events.ts'
import { testDb } from './support/database.ts'
import { newTenant, uniqueName, until } from './support/fixtures.ts'
import { killAll, postTask, spawnApi, spawnWorker } from './support/processes.ts'
import { readSse, type SseEvent } from './support/sse.ts'

/** Real `api` and `worker` processes, talking over HTTP and PostgreSQL only. */
let api: Awaited<ReturnType<typeof spawnApi>>
let tenant: Awaited<ReturnType<typeof newTenant>>
const queue = uniqueName('e2e')

beforeAll(async () => {
  tenant = await newTenant()
  ;[api] = await Promise.all([spawnApi(), spawnWorker({ WORKER_QUEUES: queue, WORKER_CONCURRENCY: '4' })])
}, 30_000)
afterAll(() => killAll())

async function submit(payload: Record<string, unknown>, body: Record<string, unknown> = {}) {
  const response = await postTask(api.url, tenant.auth, { type: 'demo.sleep', payload, queue, ...body })
  expect(response.status).toBe(202)
  return await response.json() as any
}

const describeEvent = (event: SseEvent) =>
  event.event === 'status' ? `${event.data.status}:${event.data.attempt}` : `${event.data.percent}%`

describe('end to end', () => {
  test('a task submitted over HTTP runs in the worker, and its stream shows every event in order', async () => {
    const task = await submit({ seconds: 0.4, steps: 4 })
    // links.events carries a stream token: no Authorization header, as from a browser EventSource.
    const read = await readSse(await fetch(`${api.url}${task.links.events}`))
    expect(read.ended).toBe(true)
    expect(read.events.map((event) => Number(event.id))).toEqual([1, 2, 3, 4, 5, 6, 7])
    expect(read.events.map(describeEvent)).toEqual(['queued:0', 'running:1', '25%', '50%', '75%', '100%', 'succeeded:1'])
    expect(read.events.every((event) => event.data.taskId === task.id)).toBe(true)
    expect(read.events.at(-1)!.data.result).toEqual({ slept: 0.4, steps: 4 })
    const stored = await (await fetch(`${api.url}/v1/tasks/${task.id}`, { headers: tenant.auth })).json() as any
    expect(stored).toMatchObject({ status: 'succeeded', attempt: 1, progress: { percent: 100 }, result: { slept: 0.4, steps: 4 } })
  })

  test('a client that drops the stream resumes with Last-Event-ID and misses nothing', async () => {
    const task = await submit({ seconds: 1, steps: 10 })
    const first = await readSse(await fetch(`${api.url}/v1/tasks/${task.id}/events`, { headers: tenant.auth }), (read) => read.events.length >= 4)
    expect(first.ended).toBe(false)
    const lastId = first.events.at(-1)!.id!
    const rest = await readSse(await fetch(`${api.url}/v1/tasks/${task.id}/events`, { headers: { ...tenant.auth, 'last-event-id': lastId } }))
    const ids = [...first.events, ...rest.events].map((event) => Number(event.id))
    expect(ids).toEqual(Array.from({ length: 13 }, (_, i) => i + 1))
    expect(describeEvent(rest.events.at(-1)!)).toBe('succeeded:1')
  })

  test('a task that fails once is retried by the worker and then succeeds', async () => {
    const task = await submit({ seconds: 0, steps: 1, failTimes: 1 })
    const read = await readSse(await fetch(`${api.url}${task.links.events}`))
    expect(read.events.filter((event) => event.event === 'status').map(describeEvent))
      .toEqual(['queued:0', 'running:1', 'queued:1', 'running:2', 'succeeded:2'])
    expect(read.events[2]!.data).toMatchObject({ error: { message: expect.stringContaining('failing on purpose'), retryable: true }, retryAt: expect.any(String) })
  })

  test('two worker processes never run the same task', async () => {
    const shared = uniqueName('e2e-shared')
    const workers = await Promise.all([1, 2].map(() =>
      spawnWorker({ WORKER_QUEUES: shared, WORKER_CONCURRENCY: '8', LOG_LEVEL: 'debug' })))
    const ids: string[] = []
    for (let i = 0; i < 200; i++) ids.push((await submit({ seconds: 0.01, steps: 1 }, { queue: shared })).id)
    const { sql } = testDb()
    await until(async () => {
      const [row] = await sql`select count(*)::int as n from taskcast.tasks where queue = ${shared} and status = 'succeeded'`
      return row!.n === 200
    }, 30_000, 'all 200 tasks to succeed')
    for (const id of ids) {
      const events = await taskEventsAfter(sql, id, 0)
      expect(events.filter((event) => event.kind === 'status').map((event) => event.data.status)).toEqual(['queued', 'running', 'succeeded'])
    }
    const claimedBy = workers.map((worker) => worker.logs.filter((line) => line.message === 'task claimed').map((line) => line.taskId))
    expect(claimedBy[0]!.length).toBeGreaterThan(0)
    expect(claimedBy[1]!.length).toBeGreaterThan(0)
    expect(claimedBy[0]!.length + claimedBy[1]!.length).toBe(200)
    expect(new Set([...claimedBy[0]!, ...claimedBy[1]!])).toEqual(new Set(ids))
    expect(await Promise.all(workers.map((worker) => worker.stop('SIGTERM')))).toEqual([0, 0])
  }, 60_000)
})
