import { expect, test } from 'bun:test'
import { createEventHub, type EventHub } from '../api/hub.ts'
import { Channel } from '../db/client.ts'
import { createListener, type Listener } from '../db/listener.ts'
import { testDb } from './support/database.ts'
import { quietLog, until } from './support/fixtures.ts'

/** Runs `check` with a hub on its own LISTEN connection, stopped afterwards. */
async function withHub(check: (hub: EventHub, listener: Listener) => Promise<void>, options?: { idleMs?: number }) {
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-hub', log: quietLog })
  const hub = createEventHub(listener, quietLog, options)
  await listener.start()
  try {
    await check(hub, listener)
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
    await hub.listening()
    expect(woken).toEqual([0]) // once listening: read, in case an event came before
    woken.length = 0
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
    await hub.listening()
    woken.length = 0
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

test('listens only while subscriptions are open, and wakes a new one once it listens again', async () => {
  const { sql } = testDb()
  await withHub(async (hub, listener) => {
    const calls: string[] = []
    for (const call of ['listen', 'unlisten'] as const) {
      const real = listener[call].bind(listener)
      listener[call] = (channel) => {
        calls.push(call)
        return real(channel)
      }
    }
    const taskId = crypto.randomUUID()
    const notify = (seq: number) =>
      sql`select pg_notify(${Channel.taskEvent}, ${JSON.stringify({ tenant: crypto.randomUUID(), id: seq, task: taskId, seq })})`

    const woken: number[] = []
    const first = hub.subscribeTask(taskId, (seq) => woken.push(seq), () => {})
    const second = hub.subscribeTenant(crypto.randomUUID(), () => {}, () => {})
    await hub.listening()
    expect(calls).toEqual(['listen'])
    expect(woken).toEqual([0])
    await notify(2)
    await until(async () => woken.includes(2), 5000, 'the notification')
    first()
    second()
    await until(async () => calls.length === 2, 5000, 'the hub to stop listening')
    expect(calls).toEqual(['listen', 'unlisten'])

    const again: number[] = []
    const third = hub.subscribeTask(taskId, (seq) => again.push(seq), () => {})
    await hub.listening()
    expect(calls).toEqual(['listen', 'unlisten', 'listen'])
    expect(again).toEqual([0])
    await notify(3)
    await until(async () => again.includes(3), 5000, 'the notification after listening again')
    third()
  }, { idleMs: 50 })
})
