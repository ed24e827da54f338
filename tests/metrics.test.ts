import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { freePort } from '../db/embedded-postgres.ts'
import { taskInsert } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, startApp, uniqueName, until } from './support/fixtures.ts'
import { killAll, spawnWorker } from './support/processes.ts'

/** The value of one series in a Prometheus text exposition, matched by name and labels. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]))
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) return Number(match[3])
  }
  return undefined
}

let api: Awaited<ReturnType<typeof startApp>>
beforeAll(async () => {
  api = await startApp()
})
afterAll(async () => {
  await api.stop()
  await killAll()
})

describe('GET /metrics', () => {
  test('serves Prometheus text without a key; submissions and queue depth move', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('metrics')
    const scrape = async () => {
      const response = await api.request('/metrics')
      expect(response.status).toBe(200)
      expect(response.headers.get('content-type')).toStartWith('text/plain')
      return response.text()
    }
    const before = await scrape()
    expect(sample(before, 'taskcast_tasks_submitted_total', { queue })).toBeUndefined()
    for (let i = 0; i < 3; i++) {
      const response = await api.request('/v1/tasks', { method: 'POST', headers: tenant.auth, json: { type: 'demo.sleep', queue, payload: { seconds: 1 } } })
      expect(response.status).toBe(202)
    }
    await api.request('/v1/tasks/batch', { method: 'POST', headers: tenant.auth, json: { tasks: [{ type: 'demo.primes', queue, payload: { limit: 10 } }] } })
    const after = await scrape()
    expect(sample(after, 'taskcast_tasks_submitted_total', { type: 'demo.sleep', queue })).toBe(3)
    expect(sample(after, 'taskcast_tasks_submitted_total', { type: 'demo.primes', queue })).toBe(1)
    expect(sample(after, 'taskcast_queue_depth', { queue, status: 'queued' })).toBe(4)
    expect(sample(after, 'taskcast_queue_oldest_age_seconds', { queue })).toBeGreaterThanOrEqual(0)
    expect(sample(after, 'taskcast_pg_notification_queue_usage')).toBeGreaterThanOrEqual(0)
    expect(sample(after, 'taskcast_listen_connected')).toBe(1)
    expect(sample(after, 'taskcast_listen_reconnects_total')).toBeGreaterThanOrEqual(0)
    expect(sample(after, 'taskcast_sse_streams')).toBe(api.hub.size)
  })
})

describe('a worker\'s metrics at WORKER_METRICS_PORT', () => {
  test('count completions by type and status, and time waits and runs', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('metrics')
    const port = await freePort()
    await spawnWorker({ WORKER_QUEUES: queue, WORKER_METRICS_PORT: String(port) })
    const tasks = await taskInsert(testDb().sql, [
      newTask(tenant.id, { queue, payload: { seconds: 0.1, steps: 1 } }),
      newTask(tenant.id, { queue, payload: { seconds: 0 } }),
      newTask(tenant.id, { queue, payload: { seconds: 'never' } }), // fails permanently
    ])
    const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    await until(async () => {
      const [row] = await testDb().sql`select count(*)::int as n from taskcast.tasks where id = any(${tasks.map((t) => t.id)}::uuid[]) and finished_at is not null`
      return row!.n === 3
    }, 15_000, 'the three tasks to finish')
    const text = await scrape()
    expect(sample(text, 'taskcast_tasks_completed_total', { type: 'demo.sleep', status: 'succeeded' })).toBe(2)
    expect(sample(text, 'taskcast_tasks_completed_total', { type: 'demo.sleep', status: 'failed' })).toBe(1)
    expect(sample(text, 'taskcast_task_wait_seconds_count', { type: 'demo.sleep', queue })).toBe(3)
    expect(sample(text, 'taskcast_task_duration_seconds_count', { type: 'demo.sleep', outcome: 'succeeded' })).toBe(2)
    expect(sample(text, 'taskcast_task_duration_seconds_bucket', { type: 'demo.sleep', outcome: 'succeeded', le: '+Inf' })).toBe(2)
    expect(sample(text, 'taskcast_tasks_running')).toBe(0)
    expect(sample(text, 'taskcast_listen_connected')).toBe(1)
    expect((await fetch(`http://127.0.0.1:${port}/nope`)).status).toBe(404)
  }, 30_000)
})
