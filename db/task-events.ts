import type postgres from 'postgres'
import { Channel, type Queryable, type Sql } from './client.ts'

export interface TaskEventRow {
  id: number
  taskId: string
  seq: number
  kind: 'status' | 'progress'
  data: Record<string, unknown>
  createdAt: Date
}

/** A task's events after `afterSeq`, in order; at most `limit` (the caller reads on for more). */
export async function taskEventsAfter(sql: Sql, taskId: string, afterSeq: number, limit = 500): Promise<TaskEventRow[]> {
  const rows = await sql<(TaskEventRow & { id: string })[]>`
    select id, task_id, seq, kind, data, created_at from taskcast.task_events
    where task_id = ${taskId} and seq > ${afterSeq}
    order by seq
    limit ${limit}`
  return rows.map((row) => ({ ...row, id: Number(row.id) }))
}

type Fragment = postgres.PendingQuery<postgres.Row[]>

/**
 * Wraps a statement that changes task rows (`insert/update … returning *`) so that, in the same
 * statement and so the same transaction, each changed row gets its event appended (seq = the row's
 * new last_seq) and a NOTIFY carrying the event's ids. `data` is an expression over the changed row.
 * With `wake`, the workers of the rows' queues are notified too (the rows became claimable).
 */
export function withEvent<Row extends object>(
  sql: Queryable,
  change: Fragment,
  kind: 'status' | 'progress',
  data: Fragment,
  { wake = false, perTenant = false } = {},
) {
  // perTenant: one NOTIFY per tenant carrying its latest event id, for new tasks, whose streams
  // nobody can have opened yet; only tenant-wide listeners care.
  const notify = perTenant
    ? sql`select count(pg_notify(${Channel.taskEvent}, json_build_object('tenant', tenant_id, 'id', id)::text))
          from (select tenant_id, max(id) as id from events group by tenant_id) latest`
    : sql`select count(pg_notify(${Channel.taskEvent},
            json_build_object('task', task_id, 'tenant', tenant_id, 'seq', seq, 'id', id)::text)) from events`
  return sql<Row[]>`
    with changed as (${change}),
    events as (
      insert into taskcast.task_events (task_id, tenant_id, seq, kind, data)
      select id, tenant_id, last_seq, ${kind}, ${data} from changed
      returning id, task_id, tenant_id, seq
    ),
    notified as (${notify}),
    woken as (
      select count(pg_notify(${Channel.taskReady}, queue)) from (select distinct queue from changed) q
      where ${wake}
    )
    select changed.* from changed, notified, woken`
}

