import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { treaty } from '@elysiajs/eden'
import { createParser } from 'eventsource-parser'
import type { App } from '../api/app.ts'
import type { TaskStatus } from '../db/contracts.ts'
import { newTenant, uniqueName } from './support/fixtures.ts'
import { killAll, spawnApi, spawnWorker, type Service } from './support/processes.ts'

const queue = uniqueName('client')
let server: Service & { url: string }

beforeAll(async () => {
  ;[server] = await Promise.all([spawnApi(), spawnWorker({ WORKER_QUEUES: queue })])
}, 30_000)
afterAll(killAll)

/** Reads an SSE body to its end, as the README's example does; the server ends it after the terminal event. */
async function follow(response: Response) {
  const events: Array<{ id?: string; event?: string; data: any }> = []
  const parser = createParser({ onEvent: ({ id, event, data }) => events.push({ id, event, data: JSON.parse(data) }) })
  for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) parser.feed(chunk)
  return events
}

describe('the typed client (Eden treaty over `type App`)', () => {
  test('submits a task, gets it, lists it and follows its events to the end', async () => {
    const tenant = await newTenant()
    const api = treaty<App>(server.url, { headers: { authorization: `Bearer ${tenant.key}` } })

    const { data: task, error, status } = await api.v1.tasks.post({ type: 'demo.sleep', payload: { seconds: 0.2, steps: 2 }, queue })
    if (error) throw error.value
    expect(status).toBe(202)
    const submitted: TaskStatus = task.status // typed from the task resource schema
    expect(['queued', 'running']).toContain(submitted) // running: handed straight to an idle worker
    expect(task.payload).toEqual({ seconds: 0.2, steps: 2, failTimes: 0 })

    const fetched = await api.v1.tasks({ id: task.id }).get()
    expect(fetched.data?.id).toBe(task.id)

    const page = await api.v1.tasks.get({ query: { queue } })
    expect(page.data?.items.map((item) => item.id)).toEqual([task.id])
    expect(page.data?.nextCursor).toBeNull()

    // links.events carries a read-only stream token: no Authorization header needed.
    const stream = await fetch(new URL(task.links.events, server.url))
    expect(stream.headers.get('content-type')).toStartWith('text/event-stream')
    const events = await follow(stream)
    expect(events.map((event) => event.id)).toEqual(events.map((_, i) => String(i + 1)))
    expect(events.filter((event) => event.event === 'progress').length).toBeGreaterThan(0)
    expect(events.at(-1)).toMatchObject({ event: 'status', data: { taskId: task.id, status: 'succeeded' } })

    const done = await api.v1.tasks({ id: task.id }).get()
    expect(done.data).toMatchObject({ status: 'succeeded', attempt: 1, progress: { percent: 100 } })
  })

  test('a payload of the wrong type is a compile-time error, and a 422 problem at run time', async () => {
    const tenant = await newTenant()
    const api = treaty<App>(server.url, { headers: { authorization: `Bearer ${tenant.key}` } })
    // @ts-expect-error demo.sleep's payload.seconds is a number in the catalogue's schema
    const { data, error } = await api.v1.tasks.post({ type: 'demo.sleep', payload: { seconds: 'two' }, queue })
    expect(data).toBeNull()
    expect(error?.status).toBe(422)
    expect(error?.value).toMatchObject({ status: 422, errors: [{ path: '/payload/seconds' }] })
  })
})
