import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { taskGet } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { newTenant, uniqueName, until } from './support/fixtures.ts'
import { killAll, postTask, spawnApi, spawnWorker } from './support/processes.ts'
import { readSse, type SseEvent } from './support/sse.ts'

/** Faults injected into real processes: kill -9, SIGSTOP past the lease, SIGTERM. */
const leaseSeconds = 2
let api: Awaited<ReturnType<typeof spawnApi>>
let tenant: Awaited<ReturnType<typeof newTenant>>

beforeAll(async () => {
  tenant = await newTenant()
  api = await spawnApi()
}, 30_000)
afterAll(() => killAll())

const workerEnv = (queue: string, env: Record<string, string> = {}) =>
  ({ WORKER_QUEUES: queue, TASKCAST_LEASE_SECONDS: String(leaseSeconds), ...env })

async function submit(queue: string, payload: Record<string, unknown>) {
  const response = await postTask(api.url, tenant.auth, { type: 'demo.sleep', payload, queue })
  return await response.json() as any
}

const status = (event: SseEvent) => event.event === 'status' ? `${event.data.status}:${event.data.attempt}` : 'progress'
const statuses = (events: SseEvent[]) => events.map(status).filter((s) => s !== 'progress')
const isTerminal = (event: SseEvent) => /^(succeeded|failed|canceled):/.test(status(event))
const streamOf = (task: any) => fetch(`${api.url}${task.links.events}`)

describe('a worker that dies', () => {
  test('killed with -9 mid-task: another worker completes the task after the lease expires, with one terminal event', async () => {
    const queue = uniqueName('kill')
    const doomed = await spawnWorker(workerEnv(queue))
    const task = await submit(queue, { seconds: 2, steps: 4 })
    const stream = await streamOf(task)
    const reading = readSse(stream)
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))!.status === 'running', 10_000, 'running')
    await spawnWorker(workerEnv(queue))
    const killedAt = Date.now()
    doomed.proc.kill('SIGKILL')
    const { events } = await reading
    expect(statuses(events)).toEqual(['queued:0', 'running:1', 'queued:1', 'running:2', 'succeeded:2'])
    expect(events.filter(isTerminal)).toHaveLength(1)
    expect(events.find((event) => status(event) === 'queued:1')!.data.reason).toContain('lease expired')
    const restartedAt = Date.parse(events.find((event) => status(event) === 'running:2')!.data.at)
    console.log(`kill -9 recovery: attempt 2 started ${restartedAt - killedAt} ms after the kill (lease ${leaseSeconds} s)`)
    expect(restartedAt - killedAt).toBeLessThan((leaseSeconds + 5) * 1000)
  }, 30_000)

  test('paused past its lease (SIGSTOP) and resumed: its late outcome is refused, the new attempt stands', async () => {
    const queue = uniqueName('stop')
    const stale = await spawnWorker(workerEnv(queue))
    const task = await submit(queue, { seconds: 3, steps: 3 })
    const reading = readSse(await streamOf(task))
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))!.status === 'running', 10_000, 'running')
    stale.proc.kill('SIGSTOP')
    await spawnWorker(workerEnv(queue))
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))!.attempt === 2, 15_000, 'attempt 2')
    stale.proc.kill('SIGCONT')
    // Awake again, the stale worker finds its lease gone: at its renewal, or when its write is fenced out.
    await stale.waitForLog((line) => String(line.message).startsWith('lease lost') && line.taskId === task.id, 10_000)
    const { events } = await reading
    expect(statuses(events)).toEqual(['queued:0', 'running:1', 'queued:1', 'running:2', 'succeeded:2'])
    expect(events.filter(isTerminal)).toHaveLength(1)
    expect(await taskGet(testDb().sql, tenant.id, task.id)).toMatchObject({ status: 'succeeded', attempt: 2 })
    expect(stale.proc.exitCode).toBeNull()
  }, 30_000)
})

describe('graceful shutdown', () => {
  test('SIGTERM: the worker stops claiming, finishes a short task, releases a long one at once, and exits 0', async () => {
    const queue = uniqueName('term')
    const worker = await spawnWorker(workerEnv(queue, { TASKCAST_SHUTDOWN_GRACE_SECONDS: '1' }))
    const short = await submit(queue, { seconds: 0.5, steps: 1 })
    const long = await submit(queue, { seconds: 30, steps: 30 })
    const running = async (id: string) => (await taskGet(testDb().sql, tenant.id, id))!.status === 'running'
    await until(async () => (await running(short.id)) && (await running(long.id)), 10_000, 'both tasks running')
    expect(await worker.stop('SIGTERM')).toBe(0)
    expect((await taskGet(testDb().sql, tenant.id, short.id))!.status).toBe('succeeded')
    expect(await taskGet(testDb().sql, tenant.id, long.id)).toMatchObject({ status: 'queued', lockedBy: null, attempt: 0 })
    // Released, not abandoned: the next worker takes it without waiting for a lease to expire.
    const next = await spawnWorker(workerEnv(queue))
    await until(async () => running(long.id), 5000, 'the released task to run again')
    await next.stop('SIGKILL')
  }, 30_000)

  test('SIGTERM just after start: maintenance in flight ends before the pools close, and nothing is logged as a warning', async () => {
    const worker = await spawnWorker(workerEnv(uniqueName('quick')))
    expect(await worker.stop('SIGTERM')).toBe(0)
    const complaints = worker.logs.filter((line) => ['warn', 'error', 'fatal'].includes(String(line.level)))
    expect(complaints.map((line) => line.message)).toEqual([])
  }, 30_000)

  test('a second signal makes the worker exit at once; the lease covers its task', async () => {
    const queue = uniqueName('twice')
    const worker = await spawnWorker(workerEnv(queue))
    const task = await submit(queue, { seconds: 30, steps: 30 })
    await until(async () => (await taskGet(testDb().sql, tenant.id, task.id))!.status === 'running', 10_000, 'running')
    worker.proc.kill('SIGTERM')
    await worker.waitForLog((line) => String(line.message).startsWith('shutting down'))
    await Bun.sleep(1100) // a repeat within a second counts as the same signal (see lifecycle/signals.ts)
    expect(await worker.stop('SIGTERM')).toBe(1)
    expect((await taskGet(testDb().sql, tenant.id, task.id))!.status).toBe('running')
  }, 30_000)

  test('SIGTERM: the API ends open streams cleanly and exits 0', async () => {
    const doomed = await spawnApi()
    const task = await submit(uniqueName('nobody'), { seconds: 1 })
    const response = await fetch(`${doomed.url}/v1/tasks/${task.id}/events`, { headers: tenant.auth })
    let exited: Promise<number> | undefined
    // Read to the end; once the first event is in, shut the API down.
    const read = await readSse(response, ({ events }) => {
      if (events.length > 0) exited ??= doomed.stop('SIGTERM')
      return false
    })
    expect(read.ended).toBe(true)
    expect(statuses(read.events)).toEqual(['queued:0'])
    expect(await exited).toBe(0)
  }, 30_000)
})
