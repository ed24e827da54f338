import type { Sql } from '../db/client.ts'
import { taskLeaseRenew } from '../db/task-leases.ts'
import type { Logger } from '../observability/log.ts'

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
  let timer: ReturnType<typeof setInterval> | undefined
  /** The renewal in flight, if any: stop() waits for it, so it never outlives the pool it uses. */
  let current: Promise<void> | undefined

  async function renewHeld(ids: string[]) {
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

  function renew(): Promise<void> {
    const ids = held()
    if (current || ids.length === 0) return current ?? Promise.resolve()
    current = renewHeld(ids).finally(() => {
      current = undefined
    })
    return current
  }

  return {
    start() {
      timer = setInterval(() => void renew(), (leaseSeconds * 1000) / 3)
    },
    /** No more renewals; resolves when the one in flight, if any, has ended. */
    async stop() {
      clearInterval(timer)
      await current
    },
    renew,
  }
}
