import type { Sql } from '../db/client.ts'
import { idempotencyKeysPrune } from '../db/idempotency.ts'
import { taskRescue } from '../db/task-leases.ts'
import { taskPrune } from '../db/tasks.ts'
import { workersPruneGone } from '../db/workers.ts'
import type { Logger } from '../observability/log.ts'
import { periodic } from './periodic.ts'

const pruneEveryMs = 60_000

/**
 * Maintenance every worker runs, safely side by side: take back tasks whose lease expired (their
 * worker died, hung or lost the database), drop the registry entries of workers that are gone
 * (their liveness lock is free: see db/workers.ts), and now and then prune expired idempotency
 * keys and the tasks (with their events) that finished more than `retentionSeconds` ago (0: keep
 * them).
 * Checking four times per lease means a dead worker's task is queued again within
 * 1.25 leases of its last renewal.
 *
 * After this worker could not reach the database, it leaves leases alone for one lease from
 * when it reaches it again (`reconnected()`, told when the LISTEN connection is back): the outage
 * most likely kept the other workers from renewing too, and they deserve the chance to renew
 * before their tasks are run a second time. Counted from the failure instead, a sweep right after
 * an outage a little longer than that took back tasks whose workers were alive and about to renew.
 */
export function createRescuer({ sql, log, leaseSeconds, retentionSeconds }: { sql: Sql; log: Logger; leaseSeconds: number; retentionSeconds: number }) {
  let stopped = false
  let lastPrune = 0
  /** When the database last failed this worker, or came back after failing it. */
  let lastTrouble = Number.NEGATIVE_INFINITY

  async function sweep() {
    if (Date.now() - lastTrouble < leaseSeconds * 1000) return
    try {
      for (let rescued = await taskRescue(sql); rescued.length > 0 && !stopped; rescued = await taskRescue(sql)) {
        for (const task of rescued) log.warn({ taskId: task.id, attempt: task.attempt, status: task.status }, 'took back a task whose lease expired')
      }
      await workersPruneGone(sql)
      if (Date.now() - lastPrune > pruneEveryMs && !stopped) {
        lastPrune = Date.now()
        await idempotencyKeysPrune(sql)
        if (retentionSeconds > 0) {
          const cutoff = new Date(Date.now() - retentionSeconds * 1000)
          let pruned = 0
          for (let deleted = await taskPrune(sql, cutoff); deleted > 0 && !stopped; deleted = await taskPrune(sql, cutoff)) pruned += deleted
          if (pruned > 0) log.info({ pruned, finishedBefore: cutoff }, 'pruned finished tasks past their retention')
        }
      }
    } catch (error) {
      lastTrouble = Date.now()
      log.warn({ err: error }, 'maintenance failed; leaving leases alone for one lease')
    }
  }

  const sweeps = periodic(sweep, Math.min(5000, (leaseSeconds * 1000) / 4))
  return {
    start() {
      sweeps.start()
      void sweeps.run()
    },
    /** No more sweeps; resolves when the one in flight, if any, has ended its statement. */
    async stop() {
      stopped = true
      await sweeps.stop()
    },
    sweep: sweeps.run,
    /** The database is reachable again after a loss: leave leases alone for one more lease. */
    reconnected() {
      lastTrouble = Date.now()
    },
  }
}
