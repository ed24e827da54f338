import { advisoryKeysHeldHere, type Queryable, type Sql } from './client.ts'
import type { Fragment } from './task-events.ts'

/**
 * The registry of workers that submissions may hand tasks to (see taskInsert): each worker's
 * queues, its free slots, its lease, and how to reach it.
 */
export interface WorkerEntry {
  id: string
  queues: readonly string[]
  leaseSeconds: number
  /** Its hand-off channel. */
  channel: string
}

/**
 * The first key of the advisory locks that say a worker is alive (the second is its lock_key): a
 * two-key lock, in a key space apart from one-key locks such as the migrations'.
 */
export const workerLockClass = 0x7a5c

/**
 * Whether the worker whose lock key is `key` is alive: its lock is held. Where it is not, this
 * takes it shared until the end of the transaction, which keeps no one else from checking.
 */
export const workerAlive = (sql: Queryable, key: Fragment) =>
  sql`not pg_try_advisory_xact_lock_shared(${workerLockClass}, ${key})`

/** How often a worker says it still runs (workerHeartbeat). */
export const workerHeartbeatMs = 1000

/**
 * How long a worker counts as running after it last said so: past this, submissions hand it
 * nothing, though its lock is held (a stopped process keeps its connection). Three heartbeats, so
 * that one late beat under load does not matter; a worker passed over is no loss, as its queue's
 * tasks then wait to be claimed.
 */
const workerAliveSeconds = 3

/** When a worker that says now that it runs stops counting as running. */
const aliveUntil = (sql: Queryable) => sql`now() + make_interval(secs => ${workerAliveSeconds})`

/**
 * Enters a worker in the registry, or updates its entry, with no free slot until it says so, and
 * takes its lock on `lockSql`, a pool of one connection kept for that alone (SqlOptions
 * keepConnections): the lock ends with that connection, when the worker does. Returns the lock's
 * key.
 */
export async function workerRegister(sql: Sql, lockSql: Sql, worker: WorkerEntry): Promise<number> {
  for (;;) {
    const key = crypto.getRandomValues(new Uint32Array(1))[0]! >>> 1 // as pg_locks shows it (objid)
    const [{ locked }] = await lockSql<[{ locked: boolean }]>`select pg_try_advisory_lock(${workerLockClass}, ${key}) as locked`
    if (!locked) continue // another worker's key
    const entered = await sql`
      insert into taskcast.workers (id, queues, free, lease_seconds, channel, lock_key, alive_until)
      values (${worker.id}, ${worker.queues as string[]}::text[], 0, ${worker.leaseSeconds}, ${worker.channel}, ${key},
              ${aliveUntil(sql)})
      on conflict (id) do update
      set queues = excluded.queues, free = 0, lease_seconds = excluded.lease_seconds, channel = excluded.channel,
          lock_key = excluded.lock_key, alive_until = excluded.alive_until
      returning id`.catch((error) => {
        if ((error as { code?: string }).code === '23505') return [] // a dead worker's key, not yet pruned
        throw error
      })
    if (entered.length > 0) return key
    await lockSql`select pg_advisory_unlock(${workerLockClass}, ${key})`
  }
}

/** Whether the worker's lock is still held on `lockSql` (its connection may have been replaced), taking it again if it is free. */
export async function workerLockHeld(lockSql: Sql, key: number): Promise<boolean> {
  const [{ held }] = await lockSql<[{ held: boolean }]>`
    select ${key}::oid = any(${advisoryKeysHeldHere(lockSql, workerLockClass)}) or pg_try_advisory_lock(${workerLockClass}, ${key}) as held`
  return held
}

/**
 * Releases the lock that says a worker is alive, if `lockSql`'s connection still holds it (after
 * the connection broke, nothing is held and there is nothing to release).
 */
export async function workerUnlock(lockSql: Sql): Promise<void> {
  await lockSql`select pg_advisory_unlock_all()`.catch(() => {})
}

/** Says that a worker still runs, for another workerAliveSeconds (see there). */
export async function workerHeartbeat(sql: Sql, workerId: string): Promise<void> {
  await sql`
    update taskcast.workers set alive_until = ${aliveUntil(sql)} where id = ${workerId}`
}

/**
 * The statement, to run alongside a claim or the storing of outcomes, that sets how many tasks a
 * worker would start at once; with `lessClaimed` (alongside a claim), the tasks it claims (its
 * `changed` rows) are taken off `free`.
 */
export function workerFreeUpdate(sql: Queryable, workerId: string, free: number, { lessClaimed = false } = {}) {
  const claimed = lessClaimed ? sql`(select count(*) from changed)::int` : sql`0`
  return sql`
    update taskcast.workers set free = greatest(${free}::int - ${claimed}, 0)
    where id = ${workerId} and free <> greatest(${free}::int - ${claimed}, 0)`
}

/**
 * Takes a worker out of the registry: once this returns, no submission can hand it a task (one
 * that is handing it one holds its row, and this waits for it).
 */
export async function workerRemove(sql: Sql, workerId: string): Promise<void> {
  await sql`delete from taskcast.workers where id = ${workerId}`
}

/** Removes the entries of workers that are gone (their lock is free). */
export async function workersPruneGone(sql: Sql): Promise<number> {
  const gone = await sql`
    delete from taskcast.workers where not ${workerAlive(sql, sql`lock_key`)}
    returning id`
  return gone.length
}
