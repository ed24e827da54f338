import type postgres from 'postgres'
import type { Queryable, Sql } from './client.ts'
import type { Progress, TaskError } from './contracts.ts'
import { withEvent, type Fragment } from './task-events.ts'
import type { TaskRow } from './tasks.ts'

/**
 * What a worker does to the tasks it holds: claim them under a lease, renew the lease, and store
 * each attempt's progress and outcome, every write fenced by the lease. And the rescue of tasks
 * whose worker stopped renewing.
 */

/** Identifies one attempt of a claimed task; every write a worker makes is fenced by it. */
export interface Lease {
  id: string
  attempt: number
  workerId: string
}

/**
 * The rows a claim takes, from the partial index tasks_claim_idx (tests check the plan). For one
 * queue the index yields rows already in claim order and the scan stops at the limit; for several,
 * PostgreSQL must sort their runnable rows first, so a worker per queue claims fastest.
 */
export function taskClaimCandidates(sql: Queryable, queues: readonly string[], limit: number) {
  const inQueues = queues.length === 1 ? sql`queue = ${queues[0]!}` : sql`queue = any(${queues as string[]}::text[])`
  return sql`
    select id from taskcast.tasks
    where status = 'queued' and ${inQueues} and run_at <= now()
    order by priority desc, run_at, id
    limit ${limit}
    for update skip locked`
}

export interface ClaimRequest {
  workerId: string
  queues: readonly string[]
  limit: number
  leaseSeconds: number
}

/**
 * The update a claim makes: the next attempt of each candidate under a lease. The candidates are
 * locked in one pass (an InitPlan), whatever the planner believes about the table: joined to it
 * instead, a plan cached while statistics said `tasks` was empty (analyzed when its rows were all
 * dead) ran the locking subquery again for every row of the table, seconds a claim over 10,000
 * rows. Run it on a pool that never reads a table whole (SqlOptions.noTableScans); tests EXPLAIN
 * the plan such a pool caches.
 */
export function taskClaimUpdate(sql: Queryable, { workerId, queues, limit, leaseSeconds }: ClaimRequest) {
  return sql`
    update taskcast.tasks
    set status = 'running', attempt = attempt + 1, locked_by = ${workerId},
        lease_until = now() + make_interval(secs => ${leaseSeconds}), started_at = now(),
        progress = null, last_seq = last_seq + 1
    where id = any(array(${taskClaimCandidates(sql, queues, limit)}))
    returning *`
}

/** What a worker needs of a task it claimed to run its attempt (not the columns it sets itself). */
export type ClaimedTask = Pick<TaskRow,
  'id' | 'tenantId' | 'type' | 'queue' | 'priority' | 'payload' | 'attempt' | 'maxAttempts' | 'timeoutSeconds' | 'runAt'
  | 'startedAt' | 'traceparent' | 'tracestate'>

/**
 * Claims up to `limit` runnable tasks, highest priority then oldest run_at first, in one statement:
 * SKIP LOCKED lets concurrent workers each take different rows without waiting on one another.
 * Each claimed task starts its next attempt under a lease and gets its `running` event. Returns
 * them in claim order, with only what a worker needs: sending the other ten columns of every row
 * (three of them timestamps) and parsing them cost a few µs a task on each side. `alongside`
 * runs in the same statement (see withEvent).
 */
export async function taskClaim(sql: Sql, request: ClaimRequest, alongside?: Fragment): Promise<ClaimedTask[]> {
  const tasks = await withEvent<ClaimedTask>(sql, taskClaimUpdate(sql, request),
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt)`,
    { columns: claimedColumns(sql, 'changed'), alongside })
  return tasks.sort(inClaimOrder)
}

/** The columns of a ClaimedTask, from the rows named `table`. */
const claimedColumns = (sql: Queryable, table: string) => sql`
  ${sql(table)}.id, ${sql(table)}.tenant_id, ${sql(table)}.type, ${sql(table)}.queue, ${sql(table)}.priority,
  ${sql(table)}.payload, ${sql(table)}.attempt, ${sql(table)}.max_attempts, ${sql(table)}.timeout_seconds,
  ${sql(table)}.run_at, ${sql(table)}.started_at, ${sql(table)}.traceparent, ${sql(table)}.tracestate`

/**
 * A hand-off notice (see taskInsert), read: the worker it is for, and the task whole, or only its
 * id when it was too big to go whole (read it with taskHandedOff).
 */
export function parseHandoffNotice(payload: string): { id: string; lockedBy: string; task?: ClaimedTask } {
  type Notice = { id: string; lockedBy: string } & Partial<Omit<ClaimedTask, 'runAt' | 'startedAt'> & { runAt: string; startedAt: string }>
  const { runAt, startedAt, lockedBy, ...rest } = JSON.parse(payload) as Notice
  if (rest.type === undefined) return { id: rest.id, lockedBy }
  return { id: rest.id, lockedBy, task: { ...(rest as Omit<ClaimedTask, 'runAt' | 'startedAt'>), runAt: new Date(runAt!), startedAt: new Date(startedAt!) } }
}

/**
 * The tasks handed to this worker (see taskInsert) that it does not hold yet: those of `ids`, or
 * all of them but `except`, such as those whose notice was lost with its LISTEN connection.
 */
export async function taskHandedOff(sql: Sql, workerId: string, which: { ids: string[] } | { except: string[] }): Promise<ClaimedTask[]> {
  const tasks = await sql<ClaimedTask[]>`
    select ${claimedColumns(sql, 'tasks')} from taskcast.tasks
    where status = 'running' and locked_by = ${workerId}
      and ${'ids' in which ? sql`id = any(${which.ids}::uuid[])` : sql`not (id = any(${which.except}::uuid[]))`}`
  return tasks.sort(inClaimOrder)
}

/** The order taskClaimCandidates takes rows in: highest priority, then oldest run_at, then id. */
const inClaimOrder = (a: ClaimedTask, b: ClaimedTask) =>
  b.priority - a.priority || a.runAt.getTime() - b.runAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/**
 * The rows a lease still holds. `locked_by` is set only while a task runs (a CHECK says so), so no
 * `status = 'running'` is needed: with it, the planner may scan the whole running-leases index,
 * dead entries included, instead of looking the ids up.
 */
const fenced = (sql: Sql, lease: Lease) =>
  sql`id = ${lease.id} and attempt = ${lease.attempt} and locked_by = ${lease.workerId}`

/** Stores the latest progress of a running attempt and appends its event; false when fenced out. */
export async function taskProgress(sql: Sql, lease: Lease, progress: Progress): Promise<boolean> {
  return (await taskProgressMany(sql, lease.workerId, [{ lease, progress }]))[0]!
}

/**
 * For an update of many running attempts of one worker: `where` finds their rows by id alone
 * (`id = any`), each fenced by its lease like `fenced`; `pick(values)` gives each row its value
 * from `values` (JSON texts, in the order of the leases) by its id's position. Joined to the values
 * instead, a plan cached while `tasks` was small read the whole table at every batch.
 */
function byLeases(sql: Queryable, workerId: string, leases: Lease[]) {
  const ids = leases.map((lease) => lease.id)
  const at = sql`array_position(${ids}::uuid[], id)`
  return {
    where: sql`id = any(${ids}::uuid[]) and locked_by = ${workerId}
      and attempt = (${leases.map((lease) => lease.attempt)}::int[])[${at}]`,
    pick: (values: Array<string | null>) => sql`(${values}::text[])[${at}]::jsonb`,
  }
}

/** Whether each lease's write was stored, in order, from the ids of the rows written. */
function storedFor(leases: Lease[], rows: Array<{ id: string }>): boolean[] {
  const stored = new Set(rows.map((row) => row.id))
  return leases.map((lease) => stored.has(lease.id))
}

/** The update of many progress reports of one worker (at most one per task). Tests EXPLAIN it. */
export function taskProgressUpdate(sql: Queryable, workerId: string, reports: Array<{ lease: Lease; progress: Progress }>) {
  const rows = byLeases(sql, workerId, reports.map((r) => r.lease))
  return sql`
    update taskcast.tasks
    set progress = ${rows.pick(reports.map((r) => JSON.stringify(r.progress)))}, last_seq = last_seq + 1
    where ${rows.where}
    returning *`
}

/**
 * Stores the latest progress of many running attempts of one worker in one statement, with their
 * events. Returns, in order, whether each was stored (false: fenced out). The NOTIFYs go inside
 * the statement: they reach streams a hop sooner than through a notifier, and the lock a
 * notifying commit holds until its flush is taken once for all the reports, where concurrent
 * statements would each wait for it in turn.
 */
export async function taskProgressMany(sql: Sql, workerId: string, reports: Array<{ lease: Lease; progress: Progress }>): Promise<boolean[]> {
  const rows = await withEvent<{ id: string }>(sql, taskProgressUpdate(sql, workerId, reports),
    'progress', sql`progress`, { inStatement: true, columns: sql`changed.id` })
  return storedFor(reports.map((r) => r.lease), rows)
}

/** Ends a running attempt as succeeded; false when it was fenced out. */
export async function taskSucceed(sql: Sql, lease: Lease, result: unknown): Promise<boolean> {
  return (await taskSucceedMany(sql, lease.workerId, [{ lease, result }]))[0]!
}

/** The update ending many running attempts of one worker as succeeded. Tests EXPLAIN it. */
export function taskSucceedUpdate(sql: Queryable, workerId: string, done: Array<{ lease: Lease; result: unknown }>) {
  const rows = byLeases(sql, workerId, done.map((d) => d.lease))
  return sql`
    update taskcast.tasks
    set status = 'succeeded', finished_at = now(), locked_by = null, lease_until = null, last_seq = last_seq + 1,
        result = ${rows.pick(done.map((d) => (d.result === undefined ? null : JSON.stringify(d.result))))}
    where ${rows.where}
    returning *`
}

/**
 * Ends many running attempts of one worker as succeeded in one statement (one commit, one NOTIFY
 * round), with `alongside` if given (see withEvent). Returns, in order, whether each was stored (false: that attempt was fenced out).
 */
export async function taskSucceedMany(sql: Sql, workerId: string, done: Array<{ lease: Lease; result: unknown }>, alongside?: Fragment): Promise<boolean[]> {
  const rows = await withEvent<{ id: string }>(sql, taskSucceedUpdate(sql, workerId, done),
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'result', result)`,
    { columns: sql`changed.id`, alongside })
  return storedFor(done.map((d) => d.lease), rows)
}

/** Ends the task as failed: out of attempts, or a permanent error. */
export async function taskFail(sql: Sql, lease: Lease, error: TaskError): Promise<TaskRow | undefined> {
  const [task] = await withEvent<TaskRow>(sql, sql`
    update taskcast.tasks
    set status = 'failed', error = ${sql.json(error as unknown as postgres.JSONValue)}, finished_at = now(),
        locked_by = null, lease_until = null, last_seq = last_seq + 1
    where ${fenced(sql, lease)}
    returning *`,
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'error', error)`)
  return task
}

/** Puts a failed attempt back in the queue, to run again at `retryAt`. */
export async function taskRetryLater(sql: Sql, lease: Lease, error: TaskError, retryAt: Date): Promise<TaskRow | undefined> {
  const [task] = await withEvent<TaskRow>(sql, sql`
    update taskcast.tasks
    set status = 'queued', error = ${sql.json(error as unknown as postgres.JSONValue)}, run_at = ${retryAt},
        locked_by = null, lease_until = null, last_seq = last_seq + 1
    where ${fenced(sql, lease)}
    returning *`,
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'error', error,
      'retryAt', to_char(run_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`)
  return task
}

/** Ends a running task whose cancellation was requested. */
export async function taskCancelRunning(sql: Sql, lease: Lease): Promise<TaskRow | undefined> {
  const [task] = await withEvent<TaskRow>(sql, sql`
    update taskcast.tasks
    set status = 'canceled', finished_at = now(), locked_by = null, lease_until = null, last_seq = last_seq + 1
    where ${fenced(sql, lease)} and cancel_requested
    returning *`,
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'reason', 'canceled by request')`)
  return task
}

/**
 * Hands unfinished tasks back to the queue at once (worker shutdown), without counting the
 * interrupted attempt against maxAttempts.
 */
export async function taskRelease(sql: Sql, workerId: string, ids: string[], reason: string): Promise<TaskRow[]> {
  if (ids.length === 0) return []
  return withEvent<TaskRow>(sql, sql`
    update taskcast.tasks
    set status = 'queued', attempt = attempt - 1, run_at = now(), locked_by = null, lease_until = null,
        last_seq = last_seq + 1
    where id = any(${ids}::uuid[]) and locked_by = ${workerId}
    returning *`,
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'reason', ${reason}::text)`,
    { wake: true })
}

export interface LeaseState {
  id: string
  cancelRequested: boolean
}

/**
 * Extends the leases of all the given tasks this worker still holds, in one statement. Tasks
 * missing from the answer are no longer this worker's (rescued after their lease expired); the
 * answer also says which ones have a cancel request, in case its NOTIFY was missed.
 */
export async function taskLeaseRenew(sql: Sql, workerId: string, ids: string[], leaseSeconds: number): Promise<LeaseState[]> {
  if (ids.length === 0) return []
  return sql<LeaseState[]>`
    update taskcast.tasks set lease_until = now() + make_interval(secs => ${leaseSeconds})
    where id = any(${ids}::uuid[]) and locked_by = ${workerId}
    returning id, cancel_requested`
}

/**
 * Takes back tasks whose lease expired (their worker died or hung), at most `limit` at a time.
 * The lost attempt counts: the task is queued again, or failed when it was the last attempt, or
 * canceled when a cancel was requested. Safe from every worker at once (SKIP LOCKED). The expired
 * rows are locked in one pass, as a claim's candidates are (see taskClaimUpdate).
 */
export async function taskRescue(sql: Sql, limit = 100): Promise<TaskRow[]> {
  const reason = 'lease expired: the worker running this attempt stopped renewing it'
  return withEvent<TaskRow>(sql, sql`
    update taskcast.tasks t
    set status = case when t.cancel_requested then 'canceled'
                      when t.attempt >= t.max_attempts then 'failed'
                      else 'queued' end,
        error = case when t.cancel_requested then t.error
                     else jsonb_build_object('name', 'LeaseExpired', 'message', ${reason}::text, 'retryable', true) end,
        finished_at = case when t.cancel_requested or t.attempt >= t.max_attempts then now() end,
        run_at = now(), locked_by = null, lease_until = null, last_seq = t.last_seq + 1
    where t.id = any(array(
      select id from taskcast.tasks
      where status = 'running' and lease_until < now()
      order by lease_until
      limit ${limit}
      for update skip locked
    ))
    returning t.*`,
    'status', sql`jsonb_build_object('status', status, 'attempt', attempt, 'reason', ${reason}::text)
                  || case when status = 'canceled' then '{}'::jsonb else jsonb_build_object('error', error) end`,
    { wake: true })
}
