import { expect, test } from 'bun:test'
import { createEventHub, type EventHub } from '../api/hub.ts'
import { Channel } from '../db/client.ts'
import { createListener } from '../db/listener.ts'
import { testDb } from './support/database.ts'
import { quietLog, until } from './support/fixtures.ts'

/** Runs `check` with a hub on its own LISTEN connection, stopped afterwards. */
async function withHub(check: (hub: EventHub) => Promise<void>) {
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-hub', log: quietLog })
  const hub = createEventHub(listener, quietLog)
  await listener.start()
  try {
    await check(hub)
  } finally {
    await listener.stop()
  }
}

test('streams of one task share a read of its events, but never one that began before the latest event', async () => {
  const { sql } = testDb()
  await withHub(async (hub) => {
    const taskId = crypto.randomUUID()
    const woken: number[] = []
    const unsubscribe = hub.subscribeTask(taskId, (seq) => woken.push(seq), () => {})
    let reads = 0
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const read = () => {
      const n = ++reads
      return gate.then(() => n)
    }

    const first = hub.sharedRead(taskId, 3, read)
    const joined = hub.sharedRead(taskId, 3, read)
    const otherCursor = hub.sharedRead(taskId, 2, read)
    expect(reads).toBe(2)

    await sql`select pg_notify(${Channel.taskEvent}, ${JSON.stringify({ tenant: crypto.randomUUID(), id: 1, task: taskId, seq: 4 })})`
    await until(async () => woken.length === 1, 5000, 'the notification')
    const afterEvent = hub.sharedRead(taskId, 3, read)
    expect(reads).toBe(3)

    release()
    expect(await Promise.all([first, joined, otherCursor, afterEvent])).toEqual([1, 1, 2, 3])
    expect(await hub.sharedRead(taskId, 3, read)).toBe(4) // a finished read is not reused
    unsubscribe()
  })
})

test('hands a subscriber the event a notification carries whole, and only the seq otherwise', async () => {
  const { sql } = testDb()
  await withHub(async (hub) => {
    const taskId = crypto.randomUUID()
    const tenant = crypto.randomUUID()
    const woken: Array<[number, unknown]> = []
    const unsubscribe = hub.subscribeTask(taskId, (seq, event) => woken.push([seq, event]), () => {})
    const at = '2026-11-23T10:00:00.123Z'
    await sql`select pg_notify(${Channel.taskEvent}, ${JSON.stringify({ tenant, id: 10, task: taskId, seq: 3, kind: 'status', data: { status: 'running', attempt: 1 }, at })})`
    await sql`select pg_notify(${Channel.taskEvent}, ${JSON.stringify({ tenant, id: 11, task: taskId, seq: 4 })})`
    await until(async () => woken.length === 2, 5000, 'both notifications')
    expect(woken).toEqual([
      [3, { id: 10, taskId, seq: 3, kind: 'status', data: { status: 'running', attempt: 1 }, createdAt: new Date(at) }],
      [4, undefined],
    ])
    unsubscribe()
  })
})
