import type { Sql } from '../db/client.ts'
import { isTerminal } from '../db/contracts.ts'
import { taskEventsAfter, type TaskEventRow } from '../db/task-events.ts'
import type { Logger } from '../observability/log.ts'
import type { EventHub } from './hub.ts'
import { eventData, eventStream, sseFrame } from './sse.ts'

export interface TaskStreamOptions {
  sql: Sql
  hub: EventHub
  log: Logger
  taskId: string
  /** Send only events after this seq (Last-Event-ID); 0 replays everything. */
  afterSeq: number
  pingMs: number
  /** Aborts when the client goes away. */
  signal: AbortSignal
}

const pageSize = 500

/** Rows read once for many streams are framed once. */
const frames = new WeakMap<TaskEventRow, string>()
function frameOf(row: TaskEventRow): string {
  let frame = frames.get(row)
  if (frame === undefined) frames.set(row, (frame = sseFrame(row.seq, row.kind, eventData(row))))
  return frame
}

const endsStream = (row: TaskEventRow) => row.kind === 'status' && isTerminal(String(row.data.status))

/**
 * One task's events as an SSE body: the stored events after `afterSeq`, then live ones until the
 * terminal status event. Every read starts after the last seq sent, and an event handed over
 * whole by a notification is sent only when it is the very next one: no gap, no duplicate.
 */
export function taskEventStream({ sql, hub, log, taskId, afterSeq, pingMs, signal }: TaskStreamOptions): ReadableStream<Uint8Array> {
  let cursor = afterSeq
  let latest: TaskEventRow | undefined
  return eventStream({
    log,
    context: { taskId },
    pingMs,
    signal,
    subscribe: (wake, end, send) => hub.subscribeTask(taskId, (seq, event) => {
      // The next event, handed over whole: sent at once, without reading the log.
      if (event && event.seq === cursor + 1) {
        send(frameOf(event))
        cursor = event.seq
        latest = event
        if (endsStream(event)) end()
      } else if (seq === 0 || seq > cursor) {
        wake()
      }
    }, end),
    async read(send) {
      let rows: TaskEventRow[]
      do {
        const after = cursor
        rows = await hub.sharedRead(taskId, after, () => taskEventsAfter(sql, taskId, after, pageSize))
        if (signal.aborted) return 'end'
        for (const row of rows) {
          // Events handed over whole while this read ran were sent already.
          if (row.seq <= cursor) continue
          send(frameOf(row))
          cursor = row.seq
          latest = row
        }
      } while (rows.length === pageSize)
      // Caught up: a terminal event that is still the latest one ends the stream.
      return latest && endsStream(latest) ? 'end' : 'caught-up'
    },
  })
}
