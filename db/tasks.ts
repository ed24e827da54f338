import { Channel, isConnectionError, type Queryable, type Sql } from './client.ts'
import { eventColumns, withEvent } from './task-events.ts'
import { workerAlive } from './workers.ts'
import type { Progress, TaskError, TaskStatus } from './contracts.ts'

export interface TaskRow {
  id: string
  tenantId: string
  type: string
  queue: string
  status: TaskStatus
  priority: number
  payload: unknown
  result: unknown
  error: TaskError | null
  progress: Progress | null
  attempt: number
  maxAttempts: number
  timeoutSeconds: number
  runAt: Date
  createdAt: Date
  startedAt: Date | null
  finishedAt: Date | null
  cancelRequested: boolean
  traceparent: string | null
  tracestate: string | null
  lockedBy: string | null
  leaseUntil: Date | null
  lastSeq: number
}

export interface NewTask {
  id: string
  tenantId: string
  type: string
  queue: string
  priority: number
  payload: unknown
  maxAttempts: number
  timeoutSeconds: number
  /** null: now */
  runAt: Date | null
  traceparent: string | null
  tracestate: string | null
}

/**
 * One column of the tasks to insert, for a statement that takes it either way: `one` value with
 * no array when every task has the same (the tasks of one request share all but their id and
 * payload), else an array of each task's value. Unnested, the empty array gives nulls, which
 * `coalesce(column, one)` fills. Shared values sent once instead of a thousand times took 12 % off
 * PostgreSQL's time and 30 % off the API's for an insert of 1,000 tasks.
 */
function shared<T>(tasks: NewTask[], value: (task: NewTask) => T): { one: T | null; each: T[] } {
  const first = value(tasks[0]!)
  for (let i = 1; i < tasks.length; i++) {
    if (value(tasks[i]!) !== first) return { one: null, each: tasks.map(value) }
  }
  return { one: first, each: [] }
}

/**
 * Inserts tasks with their first event (`queued`, seq 1) in one statement, with one NOTIFY per
 * queue to wake its workers and one per tenant for its event listeners, however many tasks.
 * Rows come back in the order given. Only the times the database set come back from it; the
 * rest of each row is what was inserted and a new row's defaults (sending and parsing whole rows
 * was a fifth of the API's CPU on the batch route).
 */
export async function taskInsert(sql: Queryable, tasks: NewTask[]): Promise<TaskRow[]> {
  if (tasks.length === 0) return []
  if (tasks.length === 1 && tasks[0]!.runAt === null) return [await taskInsertHandingOff(sql, tasks[0]!)]
  const ids = tasks.map((task) => task.id)
  const payloads = tasks.map((task) => JSON.stringify(task.payload ?? {}))
  const tenant = shared(tasks, (task) => task.tenantId)
  const type = shared(tasks, (task) => task.type)
  const queue = shared(tasks, (task) => task.queue)
  const priority = shared(tasks, (task) => task.priority)
  const maxAttempts = shared(tasks, (task) => task.maxAttempts)
  const timeout = shared(tasks, (task) => task.timeoutSeconds)
  // As text: postgres.js types an array made only of Dates as a single timestamptz.
  const runAt = shared(tasks, (task) => task.runAt?.toISOString() ?? null)
  const traceparent = shared(tasks, (task) => task.traceparent)
  const tracestate = shared(tasks, (task) => task.tracestate)
  const rows = await withEvent<Pick<TaskRow, 'id' | 'runAt' | 'createdAt'>>(sql, sql`
    insert into taskcast.tasks (id, tenant_id, type, queue, priority, payload, max_attempts,
                                timeout_seconds, run_at, traceparent, tracestate, last_seq)
    select id, coalesce(tenant_id, ${tenant.one}::uuid), coalesce(type, ${type.one}::text),
           coalesce(queue, ${queue.one}::text), coalesce(priority, ${priority.one}::int), payload::jsonb,
           coalesce(max_attempts, ${maxAttempts.one}::int), coalesce(timeout_seconds, ${timeout.one}::int),
           coalesce(coalesce(run_at, ${runAt.one}::text)::timestamptz, now()),
           coalesce(traceparent, ${traceparent.one}::text),
           coalesce(tracestate, ${tracestate.one}::text), 1
    from unnest(${ids}::uuid[], ${payloads}::text[], ${tenant.each}::uuid[], ${type.each}::text[],
                ${queue.each}::text[], ${priority.each}::int[], ${maxAttempts.each}::int[],
                ${timeout.each}::int[], ${runAt.each}::text[], ${traceparent.each}::text[],
                ${tracestate.each}::text[])
      as n(id, payload, tenant_id, type, queue, priority, max_attempts, timeout_seconds, run_at,
           traceparent, tracestate)
    returning ${eventColumns(sql)}, run_at, created_at`,
    'status', sql`'{"status": "queued", "attempt": 0}'::jsonb`, // a new task's event: the same for all
    { wake: true, perTenant: true, columns: sql`changed.id, changed.run_at, changed.created_at` })
  const byId = new Map(rows.map((row) => [row.id, row]))
  return tasks.map((task) => {
    const { runAt, createdAt } = byId.get(task.id)!
    return {
      ...task, payload: task.payload ?? {}, runAt, createdAt, status: 'queued', result: null, error: null, progress: null,
      attempt: 0, startedAt: null, finishedAt: null, cancelRequested: false, lockedBy: null, leaseUntil: null, lastSeq: 1,
    }
  })
}

/** The largest hand-off notice; past it, the notice names the task and the worker reads it. */
const maxHandoffNotice = 7000

/**
 * Inserts one task to run now, handing it straight to a waiting worker when one can take it: a
 * live worker of its queue with a free slot (db/workers.ts), and no
 * runnable task of its queue at its priority or above waits before it (a hand-off never jumps the
 * queue). The task is then inserted already running its first attempt under that worker's lease,
 * with both events (`queued`, `running`), and the worker hears of it on its own channel, with the
 * task whole when it fits a notice: it starts it without a claim round trip. Otherwise the task is
 * queued as taskInsert queues it. Workers that are busy, or locked by another hand-off, are
 * skipped rather than waited for, and so are those that have not said lately that they run.
 */
async function taskInsertHandingOff(sql: Queryable, task: NewTask): Promise<TaskRow> {
  const payload = JSON.stringify(task.payload ?? {})
  const [row] = await sql<Array<Pick<TaskRow, 'status' | 'attempt' | 'runAt' | 'createdAt' | 'startedAt' | 'lockedBy' | 'leaseUntil' | 'lastSeq'>>>`
    with worker as (
      select w.id, w.lease_seconds, w.channel from taskcast.workers w
      where w.free > 0 and ${task.queue}::text = any(w.queues) and w.alive_until > now()
        and ${workerAlive(sql, sql`w.lock_key`)}
        and not exists (
          select 1 from taskcast.tasks
          where status = 'queued' and queue = ${task.queue} and priority >= ${task.priority} and run_at <= now())
      order by w.free desc
      limit 1
      for update of w skip locked
    ),
    changed as (
      insert into taskcast.tasks (id, tenant_id, type, queue, priority, payload, max_attempts, timeout_seconds,
                                  run_at, traceparent, tracestate, status, attempt, locked_by, lease_until,
                                  started_at, last_seq)
      select ${task.id}::uuid, ${task.tenantId}::uuid, ${task.type}, ${task.queue}, ${task.priority}, ${payload}::text::jsonb,
             ${task.maxAttempts}, ${task.timeoutSeconds}, now(), ${task.traceparent}, ${task.tracestate},
             case when worker.id is null then 'queued' else 'running' end, (worker.id is not null)::int, worker.id,
             now() + make_interval(secs => worker.lease_seconds), case when worker.id is not null then now() end,
             case when worker.id is null then 1 else 2 end
      from (select) one left join worker on true
      returning *
    ),
    events as (
      insert into taskcast.task_events (task_id, tenant_id, seq, kind, data)
      select id, tenant_id, 1, 'status', jsonb_build_object('status', 'queued', 'attempt', 0) from changed
      union all
      select id, tenant_id, 2, 'status', jsonb_build_object('status', status, 'attempt', attempt) from changed
      where status = 'running'
      returning id, tenant_id
    ),
    notified as (
      select count(pg_notify(${Channel.taskEvent}, json_build_object('tenant', tenant_id, 'id', id)::text))
      from (select tenant_id, max(id) as id from events group by tenant_id) latest
    ),
    woken as (
      select count(pg_notify(${Channel.taskReady}, queue)) from changed where status = 'queued'
    ),
    taken as (
      update taskcast.workers set free = free - 1 where id = (select id from worker)
    ),
    handed as (
      select count(pg_notify(worker.channel, case when octet_length(whole) <= ${maxHandoffNotice} then whole else named end))
      from worker, changed, lateral (
        select json_build_object('id', changed.id, 'lockedBy', changed.locked_by)::text as named,
               json_build_object('id', changed.id, 'lockedBy', changed.locked_by, 'tenantId', changed.tenant_id,
                 'type', changed.type, 'queue', changed.queue, 'priority', changed.priority, 'payload', changed.payload,
                 'attempt', changed.attempt, 'maxAttempts', changed.max_attempts, 'timeoutSeconds', changed.timeout_seconds,
                 'runAt', changed.run_at, 'startedAt', changed.started_at, 'traceparent', changed.traceparent,
                 'tracestate', changed.tracestate)::text as whole
      ) notice
    )
    select changed.status, changed.attempt, changed.run_at, changed.created_at, changed.started_at, changed.locked_by,
           changed.lease_until, changed.last_seq
    from changed, notified, woken, handed`
  return {
    ...task, ...row!, payload: task.payload ?? {}, result: null, error: null, progress: null, finishedAt: null,
    cancelRequested: false,
  }
}

/**
 * Makes every transaction committed before this call durable, those committed without waiting for
 * the disk (synchronous_commit off) too: it commits, synchronously whatever the session's setting,
 * a transaction that has an id and writes WAL, which PostgreSQL flushes up to its commit record
 * and so up to every record before it. The WAL it writes is an empty logical decoding message
 * (prefix `taskcast`), which a logical decoding consumer, if there is one, can ignore; a
 * transaction that only takes an id writes none, and its commit is not flushed.
 */
async function walFlush(sql: Queryable): Promise<void> {
  await sql`select set_config('synchronous_commit', 'on', true), pg_logical_emit_message(true, 'taskcast', '')`
}

/**
 * Inserts tasks (taskInsert) and returns once they are on disk, through `connection`: a pool of
 * one connection whose commits do not wait for the disk. The insert commits at once, so its
 * NOTIFYs go out (its workers hear of the tasks) one disk flush sooner, and the NOTIFY lock is not
 * held through a flush. The flush goes right behind it on the same connection, so PostgreSQL
 * starts it as the insert ends, not a round trip later: postgres.js sends a busy connection's
 * statements in the order they are first awaited, and taskInsert awaits its statement before it
 * yields. Not `pipelined` (while the connection fails), the flush waits for the insert: sent
 * along an insert that fails, it would only make the pool try to connect once more.
 */
export async function taskInsertDurably(connection: Sql, tasks: NewTask[], { pipelined = true } = {}): Promise<TaskRow[]> {
  if (!pipelined) {
    const rows = await taskInsert(connection, tasks)
    await walFlush(connection)
    return rows
  }
  const [rows] = await Promise.all([taskInsert(connection, tasks), walFlush(connection)])
  return rows
}

/**
 * taskInsertDurably over several connections (pools of one): each insert goes through the one
 * with the fewest inserts in flight, in turn among equals (while the database is down, each pool
 * waits between attempts to connect), pipelined unless its last insert failed to reach the database.
 */
export function taskInserter(connections: Sql[]): (tasks: NewTask[]) => Promise<TaskRow[]> {
  const writing = connections.map(() => 0)
  const failing = connections.map(() => false)
  let turn = 0
  return async (tasks) => {
    let i = turn
    for (let k = 1; k < writing.length; k++) {
      const j = (turn + k) % writing.length
      if (writing[j]! < writing[i]!) i = j
    }
    turn = (i + 1) % writing.length
    writing[i]!++
    try {
      const rows = await taskInsertDurably(connections[i]!, tasks, { pipelined: !failing[i] })
      failing[i] = false
      return rows
    } catch (error) {
      failing[i] = isConnectionError(error)
      throw error
    } finally {
      writing[i]!--
    }
  }
}

export async function taskGet(sql: Queryable, tenantId: string, id: string): Promise<TaskRow | undefined> {
  const [task] = await sql<TaskRow[]>`
    select * from taskcast.tasks where id = ${id} and tenant_id = ${tenantId}`
  return task
}

export interface TaskListQuery {
  tenantId: string
  statuses?: readonly TaskStatus[]
  type?: string
  queue?: string
  /** Keyset cursor: only tasks with a smaller id (older) than this one. */
  before?: string
  limit: number
}

/** `status = 'failed'` as a literal, so that the dead-letter list reads its own partial index. */
function statusFilter(sql: Sql, statuses: readonly TaskStatus[] | undefined) {
  if (!statuses?.length) return sql``
  if (statuses.length === 1 && statuses[0] === 'failed') return sql`and status = 'failed'`
  return sql`and status = any(${statuses as TaskStatus[]}::text[])`
}

/** A tenant's tasks, newest first (ids are UUIDv7, so id order is creation order). */
export async function taskList(sql: Sql, query: TaskListQuery): Promise<TaskRow[]> {
  const { tenantId, statuses, type, queue, before, limit } = query
  return sql<TaskRow[]>`
    select * from taskcast.tasks
    where tenant_id = ${tenantId}
      ${statusFilter(sql, statuses)}
      ${type ? sql`and type = ${type}` : sql``}
      ${queue ? sql`and queue = ${queue}` : sql``}
      ${before ? sql`and id < ${before}` : sql``}
    order by id desc
    limit ${limit}`
}

export type CancelOutcome =
  | { outcome: 'missing' }
  | { outcome: 'canceled' | 'requested' | 'finished'; task: TaskRow }

/**
 * Cancels a queued task at once; on a running task sets cancel_requested and notifies the workers
 * (the one running it aborts its handler); a finished task is left as it is.
 */
export async function taskCancel(sql: Sql, tenantId: string, id: string): Promise<CancelOutcome> {
  return sql.begin(async (tx) => {
    const [task] = await tx<TaskRow[]>`
      select * from taskcast.tasks where id = ${id} and tenant_id = ${tenantId} for update`
    if (!task) return { outcome: 'missing' } as const
    if (task.status === 'queued') {
      const [canceled] = await withEvent<TaskRow>(tx, tx`
        update taskcast.tasks
        set status = 'canceled', cancel_requested = true, finished_at = now(), last_seq = last_seq + 1
        where id = ${id}
        returning *`,
        'status', tx`jsonb_build_object('status', status, 'attempt', attempt, 'reason', 'canceled by request')`)
      return { outcome: 'canceled', task: canceled! } as const
    }
    if (task.status === 'running') {
      const [requested] = await tx<TaskRow[]>`
        update taskcast.tasks set cancel_requested = true where id = ${id} returning *`
      await tx`select pg_notify(${Channel.taskCancel}, ${id})`
      return { outcome: 'requested', task: requested! } as const
    }
    return { outcome: 'finished', task } as const
  })
}


export type RetryOutcome = { outcome: 'missing' } | { outcome: 'retried' | 'unfinished'; task: TaskRow }

/** Queues a failed or canceled task again, with a fresh attempt budget; the last error is kept. */
export async function taskRetry(sql: Sql, tenantId: string, id: string): Promise<RetryOutcome> {
  const [retried] = await withEvent<TaskRow>(sql, sql`
    update taskcast.tasks
    set status = 'queued', attempt = 0, run_at = now(), finished_at = null, cancel_requested = false,
        result = null, progress = null, last_seq = last_seq + 1
    where id = ${id} and tenant_id = ${tenantId} and status in ('failed', 'canceled')
    returning *`,
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'reason', 'retried by request')`,
    { wake: true })
  if (retried) return { outcome: 'retried', task: retried }
  const task = await taskGet(sql, tenantId, id)
  return task ? { outcome: 'unfinished', task } : { outcome: 'missing' }
}

/** The smallest UUIDv7 of a moment: every task created before it has a smaller id. */
function firstUuidV7At(at: Date): string {
  const hex = Math.max(0, at.getTime()).toString(16).padStart(12, '0')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7000-8000-000000000000`
}

/**
 * Deletes up to `limit` tasks that finished before `cutoff`, with their events (and idempotency
 * keys). Ids are UUIDv7, so a range of the primary key holds every candidate: no index on
 * finished_at is kept up to date on every completion for the sake of this.
 */
export async function taskPrune(sql: Sql, cutoff: Date, limit = 1000): Promise<number> {
  const [row] = await sql<[{ count: number }]>`
    with pruned as (
      delete from taskcast.tasks
      where id = any(array(
        select id from taskcast.tasks
        where id < ${firstUuidV7At(cutoff)}::uuid and finished_at < ${cutoff}
        order by id
        limit ${limit}))
      returning id
    ),
    events as (delete from taskcast.task_events where task_id in (select id from pruned))
    select count(*)::int as count from pruned`
  return row.count
}
