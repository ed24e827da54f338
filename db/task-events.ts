import type postgres from 'postgres'
import { Channel, type Queryable, type Sql } from './client.ts'
import { notifierOf, unheard, type Notice } from './notify.ts'

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

/** An event as the tenant stream shows it: with its task's type and queue. */
export interface TenantEventRow extends TaskEventRow {
  type: string
  queue: string
}

export interface TenantEventsRead {
  /**
   * Every transaction that had an id when this read was made has an id below this bound; pass it
   * as `since` to a later read to learn when they have all ended.
   */
  bound: string
  /** Every transaction that was running at the read that gave `since` has ended. */
  settled: boolean
  rows: TenantEventRow[]
}

/**
 * The bound on the ids of running transactions: above the snapshot's xmax, and above the newest
 * transaction id any backend holds (a running transaction can be past xmax, and then it is not in
 * the snapshot's list). pg_stat_activity has 32-bit ids; they are widened next to xmax.
 */
const runningBound = (sql: Sql) => sql`
  select greatest(xmax, coalesce(max(xmax + ((backend_xid::text::bigint - xmax % 4294967296 + 6442450944) % 4294967296)
                                      - 2147483648 + 1), 0))::text as bound
  from (select pg_snapshot_xmax(pg_current_snapshot())::text::bigint as xmax) now
  left join pg_stat_activity on backend_xid is not null
  group by xmax`

/**
 * A tenant's events after the global id `afterId`, optionally of one type and queue, with what
 * the caller needs to send them in id order without skipping one.
 *
 * Ids are taken when a row is inserted but become visible when its transaction commits, so id 9
 * can appear after id 10 has been read. Every transaction that can still commit an id below the
 * highest one a read saw was already running (with a transaction id: ours take one before their
 * event ids) when that read was made; once every transaction below that read's `bound` has ended
 * (`settled`, checked against this read's snapshot), nothing at or below that highest id can
 * appear any more.
 */
export async function tenantEventsAfter(
  sql: Sql,
  { tenantId, afterId, type, queue, since, limit = 500 }:
    { tenantId: string; afterId: number; type?: string; queue?: string; since: string | null; limit?: number },
): Promise<TenantEventsRead> {
  const rows = await sql<Array<Omit<TenantEventRow, 'id'> & { id: string | null; bound: string; settled: boolean }>>`
    select running.bound,
      coalesce(pg_snapshot_xmin(pg_current_snapshot())::text::bigint >= ${since}::bigint, true) as settled,
      e.*
    from (${runningBound(sql)}) running left join lateral (
      select e.id, e.task_id, e.seq, e.kind, e.data, e.created_at, t.type, t.queue
      from taskcast.task_events e join taskcast.tasks t on t.id = e.task_id
      where e.tenant_id = ${tenantId} and e.id > ${afterId}
        and (${type ?? null}::text is null or t.type = ${type ?? null})
        and (${queue ?? null}::text is null or t.queue = ${queue ?? null})
      order by e.id
      limit ${limit}
    ) e on true
    order by e.id`
  const { bound, settled } = rows[0]!
  return {
    bound,
    settled,
    rows: rows.flatMap(({ id, taskId, seq, kind, data, createdAt, type, queue }) =>
      id === null ? [] : [{ id: Number(id), taskId, seq, kind, data, createdAt, type, queue }]),
  }
}

/** Where a new tenant stream starts: the tenant's latest event id, and the running bound when it was read. */
export async function tenantLatestEvent(sql: Sql, tenantId: string): Promise<{ id: number; bound: string }> {
  const [row] = await sql<[{ id: string; bound: string }]>`
    select coalesce((select max(id) from taskcast.task_events where tenant_id = ${tenantId}), 0) as id, running.bound
    from (${runningBound(sql)}) running`
  return { id: Number(row.id), bound: row.bound }
}

export type Fragment = postgres.PendingQuery<postgres.Row[]>

/**
 * What withEvent reads of every changed row, for a hot path's `returning` list (plus what its
 * `data` and `columns` read): returned whole (`returning *`), each row was copied with all its
 * columns, the payload too, into the statement's temporary store.
 */
export const eventColumns = (sql: Queryable) => sql`id, tenant_id, queue, last_seq`

/**
 * Wraps a statement that changes task rows (`insert/update … returning *`; on hot paths, only
 * eventColumns and what `data` and `columns` read) so that, in the same statement and so the same
 * transaction, each changed row gets its event appended (seq = the row's new last_seq), and
 * listeners are notified of the event (whole when it is small, else by its ids): after the commit
 * through the pool's notifier when it has one (see db/notify.ts), else, or with `inStatement`, by
 * a NOTIFY in the statement itself (delivered at its commit, one hop sooner). `data` is an
 * expression over the changed row. With `wake`, the workers of the rows' queues are notified too
 * (the rows became claimable). With `perTenant` (new tasks, whose streams nobody can have opened
 * yet) there is one notification per tenant, with its latest event id. `columns` (over `changed`;
 * default all) trims what comes back, which hot paths need not send and parse. `alongside`, a
 * statement that may read `changed`, runs in the same statement (and commit).
 */
export async function withEvent<Row extends object>(
  sql: Queryable,
  change: Fragment,
  kind: 'status' | 'progress',
  data: Fragment,
  { wake = false, perTenant = false, columns, inStatement = false, alongside }:
    { wake?: boolean; perTenant?: boolean; columns?: Fragment; inStatement?: boolean; alongside?: Fragment } = {},
): Promise<Row[]> {
  const insertEvents = sql`
    insert into taskcast.task_events (task_id, tenant_id, seq, kind, data)
    select id, tenant_id, last_seq, ${kind}, ${data} from changed
    returning id, task_id, tenant_id, seq, data, created_at`
  const notifier = inStatement ? undefined : notifierOf(sql)
  // Run for its effect: PostgreSQL runs every data-modifying WITH statement, read or not.
  const also = alongside ? sql`, alongside as (${alongside})` : sql``
  if (notifier) {
    // Whether anyone listens for the events is looked at once, in this transaction (see unheard).
    // The events come back for their notices only when someone does: sent back unheard, to be
    // dropped, they cost a worker 3–6 µs of CPU a task in a drain (claims and successes of 64:
    // 11.6–16.0 µs against 16.1–21.6 in alternated runs; bench/README.md).
    const rows = await sql<Array<Row & HeardEvent>>`
      with changed as (${change}), events as (${insertEvents}), listeners as (select ${unheard(sql)} as unheard)${also}
      select ${columns ?? sql`changed.*`}, heard.*, ${wake ? sql`changed.queue` : sql`null`} as woken_queue
      from changed join events on events.task_id = changed.id
      left join lateral (
        select events.id as event_id, events.task_id as event_task, events.tenant_id as event_tenant, events.seq as event_seq,
               events.data as event_data, events.created_at as event_at
        where (select not unheard from listeners)
      ) heard on true`
    notifier.send(notices(rows, { kind, wake, perTenant }))
    return rows.map(({ eventId: _id, eventTask: _task, eventTenant: _tenant, eventSeq: _seq, eventData: _data, eventAt: _at, wokenQueue: _queue, ...row }) =>
      row as unknown as Row)
  }
  const notify = perTenant
    ? sql`select count(pg_notify(${Channel.taskEvent}, json_build_object('tenant', tenant_id, 'id', id)::text))
          from (select tenant_id, max(id) as id from events group by tenant_id) latest`
    : sql`select count(pg_notify(${Channel.taskEvent}, case when octet_length(whole) <= ${maxWholeNotice} then whole else named end))
          from (
            select json_build_object('task', task_id, 'tenant', tenant_id, 'seq', seq, 'id', id)::text as named,
                   json_build_object('task', task_id, 'tenant', tenant_id, 'seq', seq, 'id', id, 'kind', ${kind}::text, 'data', data,
                     'at', to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))::text as whole
            from events
          ) notice`
  return sql<Row[]>`
    with changed as (${change}),
    events as (${insertEvents}),
    notified as (${notify}),
    woken as (
      select count(pg_notify(${Channel.taskReady}, queue)) from (select distinct queue from changed) q
      where ${wake}
    )${also}
    select ${columns ?? sql`changed.*`} from changed, notified, woken`
}

/** NOTIFY payloads must stay under 8000 bytes; an event too big to go whole is only named. */
const maxWholeNotice = 7000

/** A changed row's event when someone listens (see withEvent), else all null; and its queue, with `wake`. */
interface HeardEvent {
  eventId: string | null
  eventTask: string | null
  eventTenant: string | null
  eventSeq: number | null
  eventData: Record<string, unknown> | null
  eventAt: Date | null
  wokenQueue: string | null
}

/**
 * The notifications for changed rows and their events, as the in-statement NOTIFYs would send
 * them, plus each event itself when it is small (`kind`, `data`, `at`): a stream that has sent
 * everything up to the seq before can send it without reading the log. Sent after the commit,
 * so the event is stored before anyone sees it. Events go only where they came back (heard); the
 * wake-ups, always.
 */
function notices(rows: HeardEvent[], { kind, wake, perTenant }: { kind: 'status' | 'progress'; wake: boolean; perTenant: boolean }): Notice[] {
  const out: Notice[] = []
  if (perTenant) {
    const latest = new Map<string, number>()
    for (const row of rows) {
      if (row.eventId !== null) latest.set(row.eventTenant!, Math.max(latest.get(row.eventTenant!) ?? 0, Number(row.eventId)))
    }
    for (const [tenant, id] of latest) out.push({ channel: Channel.taskEvent, payload: JSON.stringify({ tenant, id }) })
  } else {
    for (const row of rows) {
      if (row.eventId === null) continue
      const named = { task: row.eventTask, tenant: row.eventTenant, seq: row.eventSeq, id: Number(row.eventId) }
      const whole = JSON.stringify({ ...named, kind, data: row.eventData, at: row.eventAt!.toISOString() })
      out.push({ channel: Channel.taskEvent, payload: Buffer.byteLength(whole) <= maxWholeNotice ? whole : JSON.stringify(named) })
    }
  }
  if (wake) for (const queue of new Set(rows.map((row) => row.wokenQueue!))) out.push({ channel: Channel.taskReady, payload: queue })
  return out
}
