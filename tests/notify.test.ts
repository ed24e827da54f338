import { afterAll, beforeAll, expect, test } from 'bun:test'
import { Channel, createSql, type Sql } from '../db/client.ts'
import { createListener } from '../db/listener.ts'
import { createNotifier, listenLock, notifyAfterCommit, unheard, type Notifier } from '../db/notify.ts'
import { taskInsert } from '../db/tasks.ts'
import { taskClaim, taskSucceed } from '../db/task-leases.ts'
import { testDb } from './support/database.ts'
import { announcers, newTask, newTenant, quietLog, uniqueName, until } from './support/fixtures.ts'

let notifier: Notifier
let sql: Sql
beforeAll(() => {
  notifier = createNotifier({ url: testDb().url, applicationName: 'taskcast-test-notify', log: quietLog })
  sql = notifyAfterCommit(createSql(testDb().url, { max: 4, applicationName: 'taskcast-test-notifying' }), notifier)
})
afterAll(async () => {
  await sql.end()
  await notifier.end()
})

test('a pool with a notifier announces its changes after they commit, exactly as in-statement NOTIFYs would', async () => {
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-notify-listen', log: quietLog })
  const events: Array<Record<string, unknown>> = []
  const ready: string[] = []
  listener.on(Channel.taskEvent, (payload) => events.push(JSON.parse(payload)))
  listener.on(Channel.taskReady, (payload) => ready.push(payload))
  await listener.start()
  try {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const [task] = await taskInsert(sql, [newTask(tenant.id, { queue }), newTask(tenant.id, { queue })])
    expect(task).toMatchObject({ queue, status: 'queued' })
    expect(Object.keys(task!)).not.toContain('eventId') // the event columns are for the notices only
    await until(async () => ready.includes(queue) && events.some((e) => e.tenant === tenant.id), 5000, 'the insert notices')
    const [latest] = await testDb().sql<[{ id: string }]>`select max(id) as id from taskcast.task_events where tenant_id = ${tenant.id}`
    expect(events.filter((e) => e.tenant === tenant.id)).toEqual([{ tenant: tenant.id, id: Number(latest.id) }])

    const [claimed] = await taskClaim(sql, { workerId: 'notify-test', queues: [queue], limit: 1, leaseSeconds: 30 })
    // Quotes, backslashes, control and non-ASCII characters reach listeners as they were stored.
    const result = { ok: true, text: 'a "quote", a \\ backslash, \\" both, a tab\t, a line\n, é, 🎉, {"x":[1]}' }
    await taskSucceed(sql, { id: claimed!.id, attempt: 1, workerId: 'notify-test' }, result)
    await until(async () => events.filter((e) => e.task === claimed!.id).length === 2, 5000, 'the running and succeeded notices')
    expect(events.filter((e) => e.task === claimed!.id).map((e) => e.seq)).toEqual([2, 3])
    expect(events.find((e) => e.task === claimed!.id && e.seq === 3)).toMatchObject({ kind: 'status', data: { status: 'succeeded', result } })

    // Inside a transaction the NOTIFY stays in the statement: it must not go out before the commit.
    await sql.begin(async (tx) => {
      await taskInsert(tx, [newTask(tenant.id, { queue: `${queue}-tx` })])
      await Bun.sleep(200)
      expect(ready).not.toContain(`${queue}-tx`)
    })
    await until(async () => ready.includes(`${queue}-tx`), 5000, 'the notice of the committed transaction')
  } finally {
    await listener.stop()
  }
})

test('notices whose payload holds an ASCII separator still arrive intact, in the same round as the others', async () => {
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-notify-listen', log: quietLog })
  const channel = uniqueName('taskcast_test')
  const payloads: string[] = []
  listener.on(channel, (payload) => payloads.push(payload))
  await listener.start()
  try {
    const sent = ['{"plain":1}', 'unit\x1fseparator', 'record\x1eseparator', '{"plain":2}']
    notifier.send(sent.map((payload) => ({ channel, payload })))
    await until(async () => payloads.length === sent.length, 5000, 'all four notices')
    expect(payloads.toSorted()).toEqual(sent.toSorted())
  } finally {
    await listener.stop()
  }
})

test('task-event notices go out only while a listener says it listens to them', async () => {
  const { sql: plain } = testDb()
  const tenant = await newTenant()
  const queue = uniqueName('q')
  const mark = uniqueName('taskcast_test_mark')
  const heard: Array<{ tenant?: string; task?: string; seq?: number }> = []
  const marks: string[] = []
  // A bare LISTEN, which says nothing: it hears task events only while someone else says so.
  const bare = createSql(testDb().url, { max: 1, applicationName: 'taskcast-test-bare-listen' })
  await bare.listen(Channel.taskEvent, (payload) => heard.push(JSON.parse(payload)))
  await bare.listen(mark, (payload) => marks.push(payload))
  const heardOfTenant = () => heard.filter((e) => e.tenant === tenant.id)
  // The notifier sends in order: once a later mark is heard, every notice sent before it would have been.
  const sendMark = async (label: string) => {
    notifier.send([{ channel: mark, payload: label }])
    await until(async () => marks.includes(label), 5000, `the mark ${label}`)
  }
  const claimOne = async () =>
    (await taskClaim(sql, { workerId: 'notify-test', queues: [queue], limit: 1, leaseSeconds: 30 }))[0]!
  // Listened to on demand, as the API's hub does while it has streams open.
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-announcing', log: quietLog })
  listener.on(Channel.taskEvent, () => {}, { onDemand: true })
  try {
    await until(async () => (await announcers()) === 0, 5000, 'listeners of other tests to be gone')
    await taskInsert(sql, [newTask(tenant.id, { queue }), newTask(tenant.id, { queue })])
    await sendMark('insert')
    expect(heardOfTenant()).toEqual([])

    await listener.start()
    expect(await announcers()).toBe(0)
    await listener.listen(Channel.taskEvent)
    expect(await announcers()).toBe(1)
    const first = await claimOne()
    await until(async () => heardOfTenant().length === 1, 5000, 'the running notice')
    expect(heardOfTenant()).toEqual([expect.objectContaining({ task: first.id, seq: 2 })])

    await listener.unlisten(Channel.taskEvent)
    expect(await announcers()).toBe(0)
    const second = await claimOne()
    await sendMark('second claim')
    expect(heardOfTenant().map((e) => e.task)).toEqual([first.id])
    expect(await plain`select 1 from taskcast.task_events where task_id = ${second.id} and seq = 2`).toHaveLength(1)
  } finally {
    await listener.stop()
    await bare.end()
  }
})

test('a listener that says it listens waits for the commit of a writer that found nobody listening', async () => {
  const writer = createSql(testDb().url, { max: 1, applicationName: 'taskcast-test-unheard-writer' })
  const listener = createListener({ url: testDb().url, applicationName: 'taskcast-test-late-announcer', log: quietLog })
  listener.on(Channel.taskEvent, () => {}, { onDemand: true })
  const waitingAnnouncements = async () => (await testDb().sql`
    select 1 from pg_locks
    where locktype = 'advisory' and classid = ${listenLock.class} and objsubid = 2 and not granted`).length
  try {
    await until(async () => (await announcers()) === 0, 5000, 'listeners of other tests to be gone')
    await listener.start()
    let announced = false
    await writer.begin(async (tx) => {
      const [{ nobody }] = await tx<[{ nobody: boolean }]>`select ${unheard(tx)} as nobody`
      expect(nobody).toBe(true)
      void listener.listen(Channel.taskEvent).then(() => { announced = true })
      await until(async () => (await waitingAnnouncements()) === 1, 5000, 'the announcement to wait for the writer')
      expect(announced).toBe(false)
      expect(await announcers()).toBe(0)
    })
    await until(() => announced, 5000, 'the announcement, once the writer committed')
    expect(await announcers()).toBe(1)
    // Now a writer finds someone listening, and sends its notices.
    const [{ nobody }] = await writer<[{ nobody: boolean }]>`select ${unheard(writer)} as nobody`
    expect(nobody).toBe(false)
  } finally {
    await listener.stop()
    await writer.end()
  }
})
