import postgres from 'postgres'

export type Sql = postgres.Sql
/** A pool or an open transaction: what a statement can run on. */
export type Queryable = postgres.Sql | postgres.TransactionSql

/** The keys of the two-key advisory locks (classId, key) this connection holds, as pg_locks shows them (oid[]). */
export const advisoryKeysHeldHere = (sql: Queryable, classId: number) => sql`
  array(
    select objid from pg_locks
    where locktype = 'advisory' and pid = pg_backend_pid() and classid = ${classId} and objsubid = 2 and granted
  )`

/** NOTIFY channels. Payloads carry ids only: NOTIFY is a wake-up hint, never the data. */
export const Channel = {
  /** A task became claimable; payload: its queue. Workers listen. */
  taskReady: 'taskcast_task_ready',
  /** An event row was written; payload: {"task","tenant","seq","id"}. API processes listen. */
  taskEvent: 'taskcast_task_event',
  /** Cancellation was requested for a running task; payload: the task id. Workers listen. */
  taskCancel: 'taskcast_task_cancel',
} as const

export interface SqlOptions {
  /** Pool size. */
  max?: number
  /** Shown in pg_stat_activity, so an operator can tell the processes apart. */
  applicationName: string
  /** The server cancels a statement running longer than this. */
  statementTimeoutMs?: number
  /**
   * false: commits return before their WAL is flushed (synchronous_commit off), for writes that
   * may be lost in a database crash without losing work, such as claims: a lost claim leaves its
   * task queued, to run again.
   */
  synchronousCommit?: boolean
  /**
   * true: the planner may not read a table whole (enable_seqscan and enable_bitmapscan off), for
   * pools that only run statements whose one good plan walks an index, such as a worker's (claims,
   * progress, leases, rescues, prunes in batches by id). Their plans are cached after a few runs,
   * often while `tasks` is small, and a plan that read the table whole (cheaper for a few pages)
   * would do so at every run as the table grows, until autovacuum next analyzes it (an end to end
   * run fell behind that way).
   */
  noTableScans?: boolean
  /**
   * true: prepared statements keep one generic plan (plan_cache_mode = force_generic_plan) rather
   * than being planned again at every run, for pools whose statements have one good plan whatever
   * their parameters. A claim's LIMIT parameter made every generic plan look costlier than a
   * custom one, so each claim was planned anew: ~17 % of its backend's CPU.
   */
  genericPlans?: boolean
  /** true: connections are never closed for being idle or old (a session lock lives on one). */
  keepConnections?: boolean
}

/**
 * A postgres.js pool whose rows come back with camelCase keys (columns are snake_case).
 * Connecting gives up after 3 s, reconnecting waits at most 1 s, and statements end after
 * `statementTimeoutMs`, so a database that is down or stuck makes callers fail fast, not hang.
 * postgres.js 3.4.9 is patched for that (patches/postgres@3.4.9.patch, applied by `bun install`):
 * a statement sent on a connection between its socket's error and its close was never settled, a
 * reconnect of that connection never sent its startup message, and a pool whose connection was
 * reset mid-statement never ended. PostgreSQL crashing under load did all three (the API's
 * submissions then waited forever); tests/connection-loss.test.ts shows each.
 *
 * JIT compilation is off: Taskcast's statements take milliseconds, and compiling one takes
 * hundreds. It was not rare: where the planner may not read a table whole, any plan that must
 * (postgres.js's type lookup on each new connection, over pg_catalog.pg_type) is costed past
 * jit_above_cost, and on a server built with LLVM (Debian's) each new worker connection spent
 * ~240 ms of database CPU compiling that one query, and a worker's first claim waited ~300 ms
 * for it.
 */
export function createSql(
  url: string,
  { max = 10, applicationName, statementTimeoutMs = 30_000, synchronousCommit = true, noTableScans = false, genericPlans = false, keepConnections = false }: SqlOptions,
): Sql {
  return postgres(url, {
    max,
    connect_timeout: 3,
    // postgres.js waits 3^n/100 s between reconnects (up to 20 s, one counter for the whole pool),
    // and queries wait with it: capped at 1 s, a query during an outage fails within seconds.
    backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1) * (0.5 + Math.random() / 2),
    idle_timeout: keepConnections ? 0 : 60,
    max_lifetime: keepConnections ? null : undefined,
    onnotice: () => {},
    transform: { column: { from: postgres.toCamel } },
    connection: {
      application_name: applicationName,
      statement_timeout: statementTimeoutMs,
      jit: 'off',
      ...(synchronousCommit ? {} : { synchronous_commit: 'off' }),
      ...(noTableScans ? { enable_seqscan: 'off', enable_bitmapscan: 'off' } : {}),
      ...(genericPlans ? { plan_cache_mode: 'force_generic_plan' } : {}),
    },
  })
}

/**
 * Whether an error means the database could not be reached or went away (refused, reset, timed
 * out, shutting down, out of connections), as opposed to a statement that failed. Such errors are
 * worth retrying; the API answers them with 503.
 */
export function isConnectionError(error: unknown): boolean {
  const code = String((error as { code?: unknown })?.code ?? '')
  return code.startsWith('08') // connection exceptions
    || ['57P01', '57P02', '57P03', '53300'].includes(code) // shutting down, starting up, too many connections
    || ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'CONNECT_TIMEOUT',
      'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED'].includes(code)
}

/** Whether PostgreSQL refused a value itself (class 22, data exception: NUL in text, bad Unicode…). */
export function isDataError(error: unknown): boolean {
  return String((error as { code?: unknown })?.code ?? '').startsWith('22')
}
