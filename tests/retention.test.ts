import { expect, test } from 'bun:test'
import { taskClaim, taskSucceed } from '../db/task-leases.ts'
import { taskInsert } from '../db/tasks.ts'
import { createRescuer } from '../worker/rescue.ts'
import { testDb } from './support/database.ts'
import { newTask, newTenant, quietLog, uniqueName } from './support/fixtures.ts'

test('maintenance deletes tasks that finished before the retention, with their events, and keeps the rest', async () => {
  const { sql } = testDb()
  const tenant = await newTenant()
  const queue = uniqueName('q')
  const days = (n: number) => Date.now() - n * 86_400_000
  // Ids are UUIDv7: a task made ten days ago has an id of then.
  const [old, oldButRecentlyFinished, oldStillQueued] = await taskInsert(sql, [
    newTask(tenant.id, { id: Bun.randomUUIDv7('hex', days(10)), queue }),
    newTask(tenant.id, { id: Bun.randomUUIDv7('hex', days(10)), queue }),
    newTask(tenant.id, { id: Bun.randomUUIDv7('hex', days(10)), queue: `${queue}-idle` }),
  ])
  const [recent] = await taskInsert(sql, [newTask(tenant.id, { queue })])
  for (const task of await taskClaim(sql, { workerId: 'retention-test', queues: [queue], limit: 3, leaseSeconds: 30 })) {
    await taskSucceed(sql, { id: task.id, attempt: 1, workerId: 'retention-test' }, null)
  }
  await sql`update taskcast.tasks set finished_at = now() - interval '8 days' where id = any(${[old!.id, recent!.id]}::uuid[])`
  await sql`update taskcast.tasks set finished_at = now() - interval '1 hour' where id = ${oldButRecentlyFinished!.id}`

  await createRescuer({ sql, log: quietLog, leaseSeconds: 30, retentionSeconds: 7 * 86_400 }).sweep()

  const ids = [old!.id, oldButRecentlyFinished!.id, oldStillQueued!.id, recent!.id]
  const left = await sql<{ id: string }[]>`select id from taskcast.tasks where id = any(${ids}::uuid[])`
  expect(left.map((row) => row.id).toSorted()).toEqual([oldButRecentlyFinished!.id, oldStillQueued!.id, recent!.id].toSorted())
  const [events] = await sql<[{ n: number }]>`select count(*)::int as n from taskcast.task_events where task_id = ${old!.id}`
  expect(events.n).toBe(0)
})
