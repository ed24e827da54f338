import type { Sql } from '../db/client.ts'
import { isTerminal } from '../db/contracts.ts'
import { taskEventsAfter, type TaskEventRow } from '../db/task-events.ts'
import type { Logger } from '../observability/log.ts'
import type { EventHub } from './hub.ts'

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

const encoder = new TextEncoder()
const pageSize = 500
const retryReadMs = 1000

export function sseFrame(row: TaskEventRow): string {
  // jsonb stores keys in its own order; lay them out as the spec shows them.
  const { status, attempt, percent, message, ...rest } = row.data
  const data = { taskId: row.taskId, status, attempt, percent, message, ...rest, at: row.createdAt.toISOString() }
  return `id: ${row.seq}\nevent: ${row.kind}\ndata: ${JSON.stringify(data)}\n\n`
}

const endsStream = (row: TaskEventRow) => row.kind === 'status' && isTerminal(String(row.data.status))

/**
 * One task's events as an SSE body: `retry:` first, then the stored events after `afterSeq`, then
 * live ones until the terminal status event, with a `: ping` comment in between.
 *
 * The hub subscription is taken before the replay, and every read starts after the last seq sent,
 * so an event that lands between replay and live is read exactly once: no gap, no duplicate.
 * Everything held for the client is released when it disconnects.
 */
export function taskEventStream({ sql, hub, log, taskId, afterSeq, pingMs, signal }: TaskStreamOptions): ReadableStream<Uint8Array> {
  let cursor = afterSeq
  let latest: TaskEventRow | undefined
  let closed = false
  let reading = false
  let again = false
  let controller!: ReadableStreamDefaultController<Uint8Array>
  let unsubscribe = () => {}
  let ping: ReturnType<typeof setInterval> | undefined
  let retry: ReturnType<typeof setTimeout> | undefined

  const send = (text: string) => {
    if (!closed) controller.enqueue(encoder.encode(text))
  }
  const close = () => {
    if (closed) return
    closed = true
    unsubscribe()
    clearInterval(ping)
    clearTimeout(retry)
    signal.removeEventListener('abort', close)
    try {
      controller.close()
    } catch {
      // already closed by the client going away
    }
  }

  /** Sends every event after the cursor; ends the stream after a terminal event that is the latest. */
  async function pump(): Promise<void> {
    if (reading) {
      again = true
      return
    }
    reading = true
    try {
      do {
        again = false
        let rows: TaskEventRow[]
        do {
          rows = await taskEventsAfter(sql, taskId, cursor, pageSize)
          if (closed) return
          for (const row of rows) {
            send(sseFrame(row))
            cursor = row.seq
            latest = row
          }
        } while (rows.length === pageSize)
        // Caught up: a terminal event that is still the latest one ends the stream.
        if (latest && endsStream(latest)) return close()
      } while (again && !closed)
    } catch (error) {
      // The database is unreachable: keep the stream and read again shortly (and on reconnect).
      log.warn({ err: error, taskId }, 'could not read task events; retrying')
      clearTimeout(retry)
      retry = setTimeout(() => void pump(), retryReadMs)
    } finally {
      reading = false
    }
  }

  return new ReadableStream<Uint8Array>({
    start(streamController) {
      controller = streamController
      unsubscribe = hub.subscribeTask(taskId, (seq) => {
        if (seq === 0 || seq > cursor) void pump()
      }, close)
      signal.addEventListener('abort', close, { once: true })
      send('retry: 2000\n\n')
      ping = setInterval(() => send(': ping\n\n'), pingMs)
      void pump()
    },
    cancel: close,
  })
}
