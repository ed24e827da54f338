import { createHash } from 'node:crypto'
import { createBatcher } from '../db/batch.ts'
import { Channel, isDataError, type Sql } from '../db/client.ts'
import type { Progress } from '../db/contracts.ts'
import type { Listener } from '../db/listener.ts'
import {
  parseHandoffNotice, taskClaim, taskHandedOff, taskProgressMany, taskRelease, taskSucceedMany, type ClaimedTask, type Lease,
} from '../db/task-leases.ts'
import {
  workerFreeUpdate, workerHeartbeat, workerHeartbeatMs, workerLockHeld, workerRegister, workerRemove, workerUnlock,
} from '../db/workers.ts'
import type { Logger } from '../observability/log.ts'
import type { TraceMode } from '../observability/spans.ts'
import { createLeaseKeeper } from './leases.ts'
import { createWorkerMetrics } from './metrics.ts'
import { periodic } from './periodic.ts'
import { createRescuer } from './rescue.ts'
import { AttemptAbort, runTask, TaskAbort, type RunEnd } from './run.ts'

export interface WorkerOptions {
  sql: Sql
  /**
   * For claims: a pool without synchronous commit, so a task starts sooner, that never reads a
   * table whole (see SqlOptions). Default: sql.
   */
  claimSql?: Sql
  /**
   * A pool of one connection that is never replaced (SqlOptions.keepConnections), holding the lock
   * that says this worker is alive: with it, submissions may hand the worker tasks (see taskInsert).
   * Default: none, and tasks come by claims only.
   */
  lockSql?: Sql
  listener: Listener
  log: Logger
  workerId: string
  queues: readonly string[]
  concurrency: number
  /**
   * Most tasks claimed ahead of free slots, to start as slots free up without waiting for a
   * claim. How many are taken is adapted to the handlers' pace (see prefetchTarget); 0: none.
   * Default: 4 × concurrency.
   */
  prefetch?: number
  leaseSeconds: number
  /** Finished tasks older than this are deleted with their events; 0 or unset: kept. */
  retentionSeconds?: number
  /** The safety net under NOTIFY: claim at least this often. */
  pollMs: number
  traceMode?: TraceMode
}

export interface Worker {
  /**
   * Claims at once, then connects the LISTEN (retrying until it can) and starts its timers (lease
   * renewals, the poll, the heartbeat, rescues); resolves once it listens, or once stopped before.
   */
  start(): Promise<void>
  /**
   * Stops claiming and waits up to `graceMs` for running tasks; then aborts their signals and
   * hands the unfinished ones back to the queue at once.
   */
  stop(graceMs: number): Promise<void>
  /** Tasks running now, for tests and metrics. */
  readonly running: number
  /** Called as each run ends, for tests and metrics. */
  onRunEnd(listener: (task: ClaimedTask, end: RunEnd) => void): void
}

interface Running {
  task: ClaimedTask
  abort: AttemptAbort
  /** Settles when the run has ended; undefined while the task waits for a slot. */
  done?: Promise<void>
  /** Its handler has ended and freed its slot; its outcome may still be on its way to the database. */
  handlerEnded?: boolean
}

/** The channel on which submissions hand a worker its tasks (see taskInsert). */
export const handoffChannel = (workerId: string) =>
  `taskcast_handoff_${createHash('sha256').update(workerId).digest('hex').slice(0, 24)}`

/** How many started attempts the worker remembers, so that none is started twice (see claimed). */
const rememberedStarts = 4096

/** Weight of the newest sample in the moving averages of handler time and claim time. */
const smoothing = 0.2
const average = (mean: number | undefined, sample: number) => (mean === undefined ? sample : mean + smoothing * (sample - mean))

/**
 * How many tasks to hold ahead of free slots: as many as `concurrency` handlers taking `handlerMs`
 * each free up during one claim of `claimMs` (Little's law), at most `maxPrefetch`; none until
 * both times are known.
 */
export function prefetchTarget({ concurrency, maxPrefetch, handlerMs, claimMs }:
  { concurrency: number; maxPrefetch: number; handlerMs?: number; claimMs?: number }): number {
  if (handlerMs === undefined || claimMs === undefined) return 0
  return Math.min(maxPrefetch, Math.floor((concurrency * claimMs) / Math.max(handlerMs, 0.01)))
}

/**
 * The claim loop. A NOTIFY on the ready channel, a finished task, a retry coming due and a poll
 * every `pollMs` all call `fill()`, which claims up to the free slots in one statement; a call
 * made while a claim is in flight makes that claim go round again, so no wake-up is lost.
 *
 * When handlers are quick next to a claim, a slot would sit empty for a whole claim round trip
 * after each one ends; so the worker also claims a few tasks ahead (`waiting`), as many as the
 * running handlers are expected to free during one claim (Little's law, from moving averages of
 * both times). Waiting tasks hold leases like running ones; slow handlers get none ahead, so no
 * task waits behind them while another worker is idle.
 *
 * While its queues look empty (its last claim came back short), the worker also says in the
 * registry how many tasks it would start at once, in the statements it makes anyway (claims and
 * stored successes); a submission may then hand it a task that starts without a claim (see
 * taskInsert). A hand-off whose notice was lost (with the LISTEN connection) is found by looking,
 * after every reconnect and three times a lease, for tasks leased to this worker that it does not
 * hold.
 */
export function createWorker(options: WorkerOptions): Worker {
  const { sql, listener, log, workerId, queues, concurrency, leaseSeconds, pollMs, traceMode } = options
  const maxPrefetch = options.prefetch ?? 4 * concurrency
  /** Every task this worker holds a lease on: running, or waiting for a slot. */
  const running = new Map<string, Running>()
  /** Claimed ahead, in claim order, waiting for a slot. */
  const waiting: Running[] = []
  let handlerMs: number | undefined
  let claimMs: number | undefined
  /** Tasks started and not yet ended (held leases, less those still waiting for a slot). */
  const runningNow = () => running.size - waiting.length
  const metrics = createWorkerMetrics({ listener, running: runningNow })
  // Tasks that succeed while an earlier success is being stored are stored together: one commit.
  const succeed = createBatcher(
    (done: Array<{ lease: Lease; result: unknown }>) => taskSucceedMany(sql, workerId, done, freeUpdate(sql)),
    { maxBatch: 200, maxInFlight: 2, isolate: isDataError },
  )
  // Reports made in one turn of the event loop, or while four statements are being stored, go
  // together: one commit, one NOTIFY lock. A report made while another is stored goes at once:
  // its commit still waits for the NOTIFY lock, held through the other's flush, but no longer for
  // its whole round trip (progress p50 2.36 -> 2.16 ms, p99 5.1 -> 4.2 ms, nine alternated pairs).
  const reportProgress = createBatcher(
    (reports: Array<{ lease: Lease; progress: Progress }>) => taskProgressMany(sql, workerId, reports),
    { maxBatch: 200, maxInFlight: 4, isolate: isDataError },
  )
  const runEndListeners: Array<(task: ClaimedTask, end: RunEnd) => void> = []
  let again = false
  let stopping = false
  /**
   * Handlers running now. A task whose handler has returned keeps its lease until its outcome is
   * stored, but no longer its slot: the next task is claimed while the outcome is written.
   */
  let handlersRunning = 0
  let poll: ReturnType<typeof setInterval> | undefined
  /** Handler slots a task could start in now. */
  const freeSlots = () => concurrency - handlersRunning - waiting.length
  /**
   * Alongside stored successes: the registry update saying how many tasks this worker would start
   * at once; none while its queues may hold more (they are claimed), or while it stops.
   */
  const freeUpdate = (db: Sql) =>
    (!options.lockSql || claimOnFree || stopping ? undefined : workerFreeUpdate(db, workerId, freeSlots()))

  /** The claim round in flight, if any; stop() waits for it so no task starts unseen. */
  let round: Promise<void> | undefined

  function fill(): Promise<void> {
    if (round) {
      again = true
      return round
    }
    round = claimRounds().finally(() => {
      round = undefined
      // A wake-up that came after the round's last look must not be lost.
      if (again && !stopping) void fill()
    })
    return round
  }

  /**
   * Whether a freed slot should claim: the last claim came back full (more may be queued), or one
   * was put off for a bigger batch. Otherwise the queue was empty at the last look, and new work
   * comes with a NOTIFY (or the poll), so ending tasks make no empty claims.
   */
  let claimOnFree = false

  /**
   * After runs end: claim for all the slots freed in this turn of the event loop at once (a
   * batch of successes frees many), not one claim for the first slot and another for the rest.
   */
  let refillScheduled = false
  function refill() {
    if (!claimOnFree || refillScheduled || stopping) return
    refillScheduled = true
    setImmediate(() => {
      refillScheduled = false
      if (!stopping) void fill()
    })
  }

  async function claimRounds(): Promise<void> {
    try {
      do {
        again = false
        const ahead = prefetchTarget({ concurrency, maxPrefetch, handlerMs, claimMs })
        const room = concurrency + ahead - handlersRunning - waiting.length
        if (room <= 0 || stopping) break
        // With quick handlers, slots free up by the dozen: rather than a claim for the first few,
        // wait for half of them (a finishing task calls fill() again), so each claim carries more.
        const busy = handlersRunning + waiting.length > 0
        if (ahead > 0 && busy && room < (concurrency + ahead) / 2) {
          claimOnFree = true
          break
        }
        const claimStarted = performance.now()
        const claimDb = options.claimSql ?? sql
        // Free slots less those this claim fills: none when it comes back full.
        const tasks = await taskClaim(claimDb, { workerId, queues, limit: room, leaseSeconds },
          options.lockSql ? workerFreeUpdate(claimDb, workerId, freeSlots(), { lessClaimed: true }) : undefined)
        if (tasks.length > 0) claimMs = average(claimMs, performance.now() - claimStarted)
        for (const task of tasks) claimed(task)
        startWaiting()
        // A full batch suggests more are waiting; go round until a claim comes back short.
        claimOnFree = tasks.length === room
        if (claimOnFree) again = true
      } while (again && !stopping)
    } catch (error) {
      log.error({ err: error }, 'claiming tasks failed')
    }
  }

  /**
   * The attempts started lately, by task, attempt and start time (a task retried by request starts
   * again at attempt 1), so that none is started twice. The oldest is forgotten through a ring of
   * their keys: found as the Set's first entry, behind the many deleted before it, it cost ~2.8 µs
   * a task, against ~0.1.
   */
  const started = new Set<string>()
  const startedInOrder: Array<string | undefined> = new Array(rememberedStarts)
  let oldestStarted = 0

  /**
   * Takes on a task leased to this worker, once per attempt: the look for hand-offs whose notice
   * was lost also finds what a claim in flight has leased (committed, not yet answered), so a
   * task can arrive by both ways.
   */
  function claimed(task: ClaimedTask) {
    const attempt = `${task.id}:${task.attempt}:${task.startedAt?.getTime()}`
    if (started.has(attempt)) return
    log.debug({ taskId: task.id, type: task.type, attempt: task.attempt }, 'task claimed')
    started.add(attempt)
    const forgotten = startedInOrder[oldestStarted]
    if (forgotten !== undefined) started.delete(forgotten)
    startedInOrder[oldestStarted] = attempt
    oldestStarted = (oldestStarted + 1) % rememberedStarts
    metrics.claimed(task)
    const entry: Running = { task, abort: new AttemptAbort() }
    running.set(task.id, entry)
    waiting.push(entry)
  }

  /**
   * Starts waiting tasks while slots are free. A claim that was in flight when stop() began still
   * starts what fits its free slots, as it would have without claiming ahead; stop() hands back the
   * rest.
   */
  function startWaiting() {
    while (handlersRunning < concurrency && waiting.length > 0) start(waiting.shift()!)
  }

  function start(entry: Running) {
    const { task, abort } = entry
    const startedAt = performance.now()
    const freeSlot = () => {
      if (entry.handlerEnded) return
      entry.handlerEnded = true
      handlersRunning--
      handlerMs = average(handlerMs, performance.now() - startedAt)
      startWaiting()
      refill()
    }
    handlersRunning++
    entry.done = runTask(task, {
      sql,
      log,
      workerId,
      abort,
      traceMode,
      succeed: (lease, result) => succeed({ lease, result }),
      reportProgress: (lease, progress) => reportProgress({ lease, progress }),
      onHandlerDone: freeSlot,
      onRetryScheduled: (at) => setTimeout(() => void fill(), Math.max(0, at.getTime() - Date.now())).unref(),
    })
      .then(
        (end) => {
          metrics.ended(task, end, (performance.now() - startedAt) / 1000)
          if (end === 'lease-lost') log.warn({ taskId: task.id, attempt: task.attempt }, 'lease lost: the outcome of this attempt was discarded')
          for (const listener of runEndListeners) listener(task, end)
        },
        (error) => log.error({ err: error, taskId: task.id }, 'storing the outcome of a task failed'),
      )
      .finally(() => {
        // The task may have been claimed again meanwhile (its lease was lost while this attempt
        // was still storing its progress): that attempt's entry stays, and its lease is renewed.
        if (running.get(task.id) === entry) running.delete(task.id)
        freeSlot()
      })
  }

  listener.on(Channel.taskReady, (queue) => {
    if (queues.includes(queue)) void fill()
  })

  /** Starts (or queues for a slot) the tasks handed to this worker, unless they are started already. */
  function handedOff(tasks: ClaimedTask[]) {
    if (stopping) return // stop() hands them back
    for (const task of tasks) claimed(task)
    startWaiting()
  }
  const readHandedOff = (which: Parameters<typeof taskHandedOff>[2]) =>
    taskHandedOff(sql, workerId, which).then(handedOff, (error) => {
      // They stay leased to this worker: the next look finds them.
      log.warn({ err: error }, 'could not read the tasks handed to this worker; looking again later')
    })
  listener.on(handoffChannel(workerId), (payload) => {
    const notice = parseHandoffNotice(payload)
    if (notice.lockedBy !== workerId) return
    if (notice.task) handedOff([notice.task])
    else void readHandedOff({ ids: [notice.id] })
  })
  /** The key of the lock that says this worker is alive, once it holds it (see db/workers.ts). */
  let lockKey: number | undefined
  /** The registration in flight, if any; stop() waits for it. */
  let registering: Promise<void> | undefined
  /** Enters the registry anew (after every connect: the database may have restarted), with a new lock. */
  async function register() {
    const { lockSql } = options
    if (!lockSql) return
    try {
      // On a connection that broke, the lock went with it.
      if (lockKey !== undefined) await workerUnlock(lockSql)
      lockKey = undefined
      lockKey = await workerRegister(sql, lockSql, { id: workerId, queues, leaseSeconds, channel: handoffChannel(workerId) })
    } catch (error) {
      log.warn({ err: error }, 'could not enter the worker registry; tasks come by claims only until it can')
    }
  }
  /**
   * Three times a lease: looks for tasks handed over whose notice was lost, and checks that the lock
   * still stands (its connection may have been replaced); if it cannot be taken again, registers anew.
   */
  const lookForHandedOff = periodic(async () => {
    if (stopping) return
    await readHandedOff({ except: [...running.keys()] })
    if (!options.lockSql || stopping) return
    const held = lockKey !== undefined && await workerLockHeld(options.lockSql, lockKey).catch(() => false)
    if (!held) await register()
  }, (leaseSeconds * 1000) / 3)
  /**
   * Every second, from the event loop: this worker still runs, so submissions may keep handing it
   * tasks. Stopped or stuck, it falls silent and is handed nothing (see db/workers.ts). A beat lost
   * to an outage costs nothing but hand-offs: the next one, or the registration after the
   * reconnect, makes it good.
   */
  const heartbeat = periodic(async () => {
    if (stopping || lockKey === undefined) return
    // On the claims' pool: its commits do not wait for the disk, so the beat holds the worker's
    // row, which a hand-off to it must lock, for less than a flush.
    await workerHeartbeat(options.claimSql ?? sql, workerId).catch(() => {})
  }, workerHeartbeatMs)

  function abort(taskId: string, why: TaskAbort['why'], message: string) {
    const entry = running.get(taskId)
    if (!entry) return
    entry.abort.abort(new TaskAbort(why, message))
    // A waiting task is started at once: its run sees the abort and stores the outcome without
    // calling the handler.
    const index = waiting.indexOf(entry)
    if (index >= 0) start(waiting.splice(index, 1)[0]!)
  }
  const leases = createLeaseKeeper({
    sql,
    log,
    workerId,
    leaseSeconds,
    held: () => [...running.keys()],
    onLost: (taskId) => {
      // A task whose handler has ended is missing from the renewal when its outcome was stored
      // first; if its lease was lost instead, storing the outcome is refused, and says so.
      if (running.get(taskId)?.handlerEnded) return
      log.warn({ taskId }, 'lease lost: another worker may run this task now; stopping its handler')
      abort(taskId, 'lease-lost', 'the lease on this task was lost')
    },
    onCancelRequested: (taskId) => abort(taskId, 'canceled', 'canceled by request'),
  })
  const rescuer = createRescuer({ sql, log, leaseSeconds, retentionSeconds: options.retentionSeconds ?? 0 })
  listener.on(Channel.taskCancel, (taskId) => abort(taskId, 'canceled', 'canceled by request'))
  // After every (re)connect: renew at once (an outage may have run the leases down), and look for
  // work, since notifications sent while the connection was down are lost. After a reconnect,
  // other workers get one lease to renew theirs before this one takes any back.
  let connectedBefore = false
  listener.onConnected(() => {
    if (connectedBefore) rescuer.reconnected()
    connectedBefore = true
    void leases.renew()
    registering = register().then(() => {
      if (stopping) return
      void fill()
      void lookForHandedOff.run()
    })
  })

  return {
    async start() {
      // Tasks queued already need no LISTEN: the first claim goes out while it connects, and the
      // look for work after it has connected finds those announced in between.
      void fill()
      await listener.start()
      if (stopping) return // stopped while the LISTEN was still connecting
      leases.start()
      lookForHandedOff.start()
      heartbeat.start()
      rescuer.start()
      poll = setInterval(() => void fill(), pollMs)
      void fill()
      log.info({ queues, concurrency }, 'worker started')
    },
    async stop(graceMs) {
      stopping = true
      clearInterval(poll)
      await Promise.all([rescuer.stop(), lookForHandedOff.stop(), heartbeat.stop(), registering])
      await round
      // No task is handed to this worker from here on; those handed to it that it has not started
      // go back to the queue at once with those claimed ahead, for other workers.
      const handedOff = await workerRemove(sql, workerId)
        .then(() => taskHandedOff(sql, workerId, { except: [...running.keys()] }))
        .catch((error) => {
          log.warn({ err: error }, 'could not leave the worker registry; tasks handed to this worker wait for their lease to end')
          return []
        })
      if (lockKey !== undefined && options.lockSql) await workerUnlock(options.lockSql)
      const unstarted = [...waiting.splice(0).map((entry) => entry.task.id), ...handedOff.map((task) => task.id)]
      for (const id of unstarted) running.delete(id)
      if (unstarted.length > 0) {
        try {
          const released = await taskRelease(sql, workerId, unstarted, 'released: the worker shut down')
          log.info({ released: released.length }, 'released tasks claimed ahead back to the queue')
        } catch (error) {
          // Their leases run out instead, and the rescuer queues them again.
          log.warn({ err: error, tasks: unstarted.length }, 'could not hand back the tasks claimed ahead')
        }
      }
      const all = () => Promise.all([...running.values()].map((entry) => entry.done))
      const finished = await Promise.race([all().then(() => true), Bun.sleep(graceMs).then(() => false)])
      if (!finished) {
        const interrupted = [...running.values()]
        for (const entry of interrupted) entry.abort.abort(new TaskAbort('shutdown', 'the worker is shutting down'))
        await all()
        const released = await taskRelease(sql, workerId, interrupted.map((entry) => entry.task.id), 'released: the worker shut down')
        log.info({ released: released.length }, 'released unfinished tasks back to the queue')
      }
      await leases.stop()
      metrics.close()
      await listener.stop()
    },
    get running() {
      return runningNow()
    },
    onRunEnd(listener) {
      runEndListeners.push(listener)
    },
  }
}
