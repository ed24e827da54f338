import { afterAll, afterEach, beforeAll, describe, expect, test } from 'bun:test'
import { taskGet, taskInsert } from '../db/tasks.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, startWorker, uniqueName } from './support/fixtures.ts'

/** The http.request type against a receiver in this test, run by a real worker loop. */
const seen: Array<{ path: string; method: string; taskId: string | null; attempt: string | null; body: string }> = []
let receiver: ReturnType<typeof Bun.serve>
const answers: Record<string, () => Response> = {
  '/ok': () => Response.json({ received: true }),
  '/text': () => new Response('plain\u0000text'),
  '/nul-json': () => new Response('{"a":"\\u0000"}', { headers: { 'content-type': 'application/json' } }),
  '/flaky': () => (seen.filter((s) => s.path === '/flaky').length < 2 ? new Response('busy', { status: 503 }) : Response.json({ ok: 1 })),
  '/gone': () => new Response('no such hook', { status: 404 }),
}

beforeAll(() => {
  receiver = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      const path = new URL(request.url).pathname
      seen.push({ path, method: request.method, taskId: request.headers.get('taskcast-task-id'), attempt: request.headers.get('taskcast-attempt'), body: await request.text() })
      return answers[path]!()
    },
  })
})
afterAll(() => receiver.stop(true))

const stops: Array<() => Promise<void>> = []
afterEach(async () => {
  await Promise.all(stops.splice(0).map((stop) => stop()))
})

async function run(path: string, extra: Record<string, unknown> = {}) {
  const tenant = await newTenant()
  const queue = uniqueName('http')
  const worker = await startWorker({ queues: [queue] })
  stops.push(() => worker.stop())
  const [task] = await taskInsert(testDb().sql, [newTask(tenant.id, {
    type: 'http.request', queue, payload: { url: `http://127.0.0.1:${receiver.port}${path}`, ...extra },
  })])
  const ends = [await worker.runEnd(task!.id)]
  while (ends.at(-1) === 'retrying') ends.push(await worker.runEnd(task!.id))
  return { ends, task: (await taskGet(testDb().sql, tenant.id, task!.id))! }
}

describe('http.request', () => {
  test('sends the body as JSON with the task id and attempt, and stores the JSON answer', async () => {
    const { ends, task } = await run('/ok', { method: 'PUT', body: { order: 7 }, headers: { 'x-signature': 'abc' } })
    expect(ends).toEqual(['succeeded'])
    expect(task.result).toEqual({ status: 200, body: { received: true } })
    expect(seen.at(-1)).toEqual({ path: '/ok', method: 'PUT', taskId: task.id, attempt: '1', body: '{"order":7}' })
  })

  test('retries 5xx answers and stores the answer that finally comes', async () => {
    const { ends, task } = await run('/flaky')
    expect(ends).toEqual(['retrying', 'succeeded'])
    expect(task).toMatchObject({ attempt: 2, result: { status: 200, body: { ok: 1 } } })
  }, 20_000)

  test('fails at once on a 4xx answer', async () => {
    const { ends, task } = await run('/gone')
    expect(ends).toEqual(['failed'])
    expect(task.error).toMatchObject({ name: 'PermanentError', message: expect.stringContaining('answered 404'), retryable: false })
  })

  test('stores a text answer without the characters PostgreSQL cannot hold', async () => {
    const { task } = await run('/text')
    expect(task.result).toEqual({ status: 200, body: 'plaintext' })
  })

  test('a result that still cannot be stored fails the task with a reason, instead of leaving it running', async () => {
    const { ends, task } = await run('/nul-json')
    expect(ends).toEqual(['failed'])
    expect(task.error).toMatchObject({ name: 'PermanentError', message: expect.stringContaining('the result cannot be stored') })
  })
})
