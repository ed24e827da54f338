import type { Sql } from '../db/client.ts'
import { taskLeaseRenew } from '../db/task-leases.ts'
import type { Logger } from '../observability/log.ts'
import { periodic } from './periodic.ts'

export interface LeaseKeeperOptions {
  sql: Sql
  log: Logger
  workerId: string
  leaseSeconds: number
  /** The ids of the tasks this worker is running now. */
  held: () => string[]
  /** A task whose lease was taken back: its handler must stop, its outcome is no longer ours. */
  onLost: (taskId: string) => void
  /** A task whose cancel was requested, learned here when its NOTIFY was missed. */
  onCancelRequested: (taskId: string) => void
}

/**
 * Renews the leases of every task this worker runs, in one statement, three times per lease: a
 * renewal can fail twice (a database blip) before the lease runs out.
 */
export function createLeaseKeeper(options: LeaseKeeperOptions) {
  const { sql, log, workerId, leaseSeconds, held, onLost, onCancelRequested } = options

  async function renew() {
    const ids = held()
    if (ids.length === 0) return
    try {
      const states = await taskLeaseRenew(sql, workerId, ids, leaseSeconds)
      const kept = new Set(states.map((state) => state.id))
      // A task that finished while the renewal was in flight is not held any more either.
      const stillHeld = new Set(held())
      for (const id of ids) if (!kept.has(id) && stillHeld.has(id)) onLost(id)
      for (const state of states) if (state.cancelRequested) onCancelRequested(state.id)
    } catch (error) {
      log.warn({ err: error }, 'renewing leases failed; retrying at the next renewal')
    }
  }

  const renewals = periodic(renew, (leaseSeconds * 1000) / 3)
  return {
    start: renewals.start,
    /** No more renewals; resolves when the one in flight, if any, has ended. */
    stop: renewals.stop,
    renew: renewals.run,
  }
}
