import * as v from 'valibot'
import { Channel } from '../db/client.ts'
import type { Listener } from '../db/listener.ts'
import type { TaskEventRow } from '../db/task-events.ts'
import type { Logger } from '../observability/log.ts'

/**
 * Called with the seq of a new event of the task, and the event itself when the notification
 * carried it whole; or with 0 when events may have been missed.
 */
export type Wake = (seq: number, event?: TaskEventRow) => void

export interface EventHub {
  /**
   * Wakes `wake` on each new event of the task, until the returned function is called. `end` is
   * called if the process shuts down first.
   */
  subscribeTask(taskId: string, wake: Wake, end: () => void): () => void
  /** Wakes `wake` on each new event of any task of the tenant, until the returned function is called. */
  subscribeTenant(tenantId: string, wake: () => void, end: () => void): () => void
  /**
   * Runs `read` for a task's events after `afterSeq`, or joins the same read already running when
   * no event of that task was notified since it started: many streams of one task, woken by one
   * event, make one query.
   */
  sharedRead<T>(taskId: string, afterSeq: number, read: () => Promise<T>): Promise<T>
  /** Ends every subscribed stream (API shutdown): clients reconnect elsewhere with Last-Event-ID. */
  endAll(): void
  /** Settles once the hub listens for the subscriptions open now, having woken them (tests wait on it). */
  listening(): Promise<void>
  /** Open subscriptions, for metrics and tests. */
  readonly size: number
  /** Whether the LISTEN connection is up (events are being received). */
  readonly connected: boolean
}

/**
 * One event of a task (whole when it is small: kind, data, at), or (for newly inserted tasks)
 * only the tenant's latest event id.
 */
const Notification = v.object({
  tenant: v.string(),
  id: v.number(),
  task: v.optional(v.string()),
  seq: v.optional(v.number()),
  kind: v.optional(v.picklist(['status', 'progress'])),
  data: v.optional(v.record(v.string(), v.unknown())),
  at: v.optional(v.pipe(v.string(), v.isoTimestamp())),
})

/** The event a notification carries whole, if it does. */
function carriedEvent({ id, task, seq, kind, data, at }: v.InferOutput<typeof Notification>): TaskEventRow | undefined {
  if (task === undefined || seq === undefined || kind === undefined || data === undefined || at === undefined) return undefined
  return { id, taskId: task, seq, kind, data, createdAt: new Date(at) }
}

/** How long the hub keeps listening after its last subscription ends, for the next one. */
const keepListeningMs = 10_000

/**
 * Fans task events out to every stream of this process from its one LISTEN connection: a client
 * costs a closure in a map, never a database connection. A notification says "task X has event
 * N", with the event itself when it is small; streams read the rows they were not handed. After a
 * reconnect every stream is woken, since notifications sent while the connection was down are lost.
 *
 * The hub listens only while streams are open (and `keepListeningMs` after): otherwise PostgreSQL
 * would wake its connection at every event of every task, for nothing. A stream opened while the
 * LISTEN is being set up may have read before it took effect; every stream is woken once it has.
 */
export function createEventHub(listener: Listener, log: Logger, { idleMs = keepListeningMs } = {}): EventHub {
  const byTask = new Map<string, Set<Wake>>()
  const byTenant = new Map<string, Set<Wake>>()
  const ends = new Set<() => void>()
  let size = 0
  /** Notifications seen per subscribed task (and in all, for reconnects): a read is current until the next. */
  const notified = new Map<string, number>()
  /** Times notifications may have been missed: the connection was made again, or a LISTEN began. */
  let resets = 0
  const reads = new Map<string, { generation: string; result: Promise<unknown> }>()
  const generation = (taskId: string) => `${resets}:${notified.get(taskId) ?? 0}`

  const wakeAll = () => {
    resets++
    for (const topics of [byTask, byTenant]) for (const wakes of topics.values()) for (const wake of wakes) wake(0)
  }
  /** The LISTEN of the subscriptions open now, settled once it has taken effect; none while idle. */
  let listening: Promise<void> | undefined
  let idle: ReturnType<typeof setTimeout> | undefined
  function keepListening() {
    clearTimeout(idle)
    listening ??= listener.listen(Channel.taskEvent).then(wakeAll)
  }
  function stopListeningSoon() {
    clearTimeout(idle)
    idle = setTimeout(() => {
      if (size > 0 || !listening) return
      listening = undefined
      void listener.unlisten(Channel.taskEvent)
    }, idleMs)
    idle.unref()
  }

  /** Adds `wake` under `key`; each subscription gets its own entry, so one client may subscribe twice. */
  function subscribe(topics: Map<string, Set<Wake>>, key: string, wake: Wake, end: () => void): () => void {
    let wakes = topics.get(key)
    if (!wakes) topics.set(key, (wakes = new Set()))
    const entry: Wake = (seq, event) => wake(seq, event)
    const endEntry = () => end()
    wakes.add(entry)
    ends.add(endEntry)
    size++
    keepListening()
    return () => {
      ends.delete(endEntry)
      if (!wakes.delete(entry)) return
      size--
      if (wakes.size === 0 && topics.get(key) === wakes) {
        topics.delete(key)
        notified.delete(key)
      }
      if (size === 0) stopListeningSoon()
    }
  }

  listener.on(Channel.taskEvent, (payload) => {
    // Every event of every task arrives here, mostly of tasks no stream of this process follows:
    // only those that wake a stream are parsed whole and checked.
    if (size === 0) return
    let event: v.InferOutput<typeof Notification>
    try {
      const raw = JSON.parse(payload) as { tenant?: unknown; task?: unknown } | null
      if (!byTenant.has(raw?.tenant as string) && !byTask.has(raw?.task as string)) return
      event = v.parse(Notification, raw)
    } catch {
      log.warn({ payload: payload.slice(0, 200) }, 'ignoring a malformed task event notification')
      return
    }
    for (const wake of byTenant.get(event.tenant) ?? []) wake(event.id)
    if (event.task === undefined) return
    const wakes = byTask.get(event.task)
    if (!wakes) return
    notified.set(event.task, (notified.get(event.task) ?? 0) + 1)
    const carried = carriedEvent(event)
    for (const wake of wakes) wake(event.seq ?? 0, carried)
  }, { onDemand: true })
  listener.onConnected(wakeAll)

  return {
    subscribeTask: (taskId, wake, end) => subscribe(byTask, taskId, wake, end),
    subscribeTenant: (tenantId, wake, end) => subscribe(byTenant, tenantId, () => wake(), end),
    sharedRead<T>(taskId: string, afterSeq: number, read: () => Promise<T>): Promise<T> {
      const key = `${taskId}:${afterSeq}`
      const current = generation(taskId)
      const running = reads.get(key)
      if (running?.generation === current) return running.result as Promise<T>
      const result = read()
      const entry = { generation: current, result }
      reads.set(key, entry)
      const forget = () => {
        if (reads.get(key) === entry) reads.delete(key)
      }
      result.then(forget, forget)
      return result
    },
    endAll() {
      for (const end of [...ends]) end()
    },
    listening: () => listening ?? Promise.resolve(),
    get size() {
      return size
    },
    get connected() {
      return listener.connected
    },
  }
}
