import type { Logger } from '../observability/log.ts'

export const sseHeaders = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no', // tell nginx-style proxies not to buffer the stream
}

/** After a read: wait for the next wake-up, end the stream, or read again after a delay anyway. */
export type ReadOutcome = 'caught-up' | 'end' | { readAgainInMs: number }

export interface EventStreamOptions {
  log: Logger
  /** What the stream is of, for log lines. */
  context: Record<string, unknown>
  pingMs: number
  /** Aborts when the client goes away. */
  signal: AbortSignal
  /**
   * Subscribes to wake-ups (new events, a reconnected LISTEN); `end` ends the stream, `send`
   * sends a frame at once (an event handed over whole, in order).
   */
  subscribe(wake: () => void, end: () => void, send: (frame: string) => void): () => void
  /** Sends the events after the stream's cursor, moving it on. */
  read(send: (frame: string) => void): Promise<ReadOutcome>
}

const encoder = new TextEncoder()
const retryReadMs = 1000

/**
 * An SSE body fed from the event log: `retry:` first, then a read on every wake-up, with a
 * `: ping` comment in between. The subscription is taken before the first read, so an event that
 * lands while a read is running wakes another read: nothing falls between replay and live. One
 * read runs at a time; wake-ups during it make it go round again. Everything held for the client
 * is released when it disconnects.
 */
export function eventStream({ log, context, pingMs, signal, subscribe, read }: EventStreamOptions): ReadableStream<Uint8Array> {
  let closed = false
  let reading = false
  let again = false
  let controller!: ReadableStreamDefaultController<Uint8Array>
  let unsubscribe = () => {}
  let ping: ReturnType<typeof setInterval> | undefined
  let timer: ReturnType<typeof setTimeout> | undefined

  const send = (text: string) => {
    if (!closed) controller.enqueue(encoder.encode(text))
  }
  const close = () => {
    if (closed) return
    closed = true
    unsubscribe()
    clearInterval(ping)
    clearTimeout(timer)
    signal.removeEventListener('abort', close)
    try {
      controller.close()
    } catch {
      // already closed by the client going away
    }
  }
  const readAfter = (ms: number) => {
    clearTimeout(timer)
    timer = setTimeout(() => void pump(), ms)
  }

  async function pump(): Promise<void> {
    if (reading) {
      again = true
      return
    }
    reading = true
    try {
      do {
        again = false
        const outcome = await read(send)
        if (closed) return
        if (outcome === 'end') return close()
        if (outcome !== 'caught-up') readAfter(outcome.readAgainInMs)
      } while (again && !closed)
    } catch (error) {
      // The database is unreachable: keep the stream and read again shortly (and on reconnect).
      log.warn({ err: error, ...context }, 'could not read events; retrying')
      readAfter(retryReadMs)
    } finally {
      reading = false
    }
  }

  return new ReadableStream<Uint8Array>({
    start(streamController) {
      controller = streamController
      unsubscribe = subscribe(() => void pump(), close, send)
      signal.addEventListener('abort', close, { once: true })
      send('retry: 2000\n\n')
      ping = setInterval(() => send(': ping\n\n'), pingMs)
      void pump()
    },
    cancel: close,
  })
}

/** An event's data as the spec lays it out: task id, then status or progress fields, then the rest. */
export function eventData(row: { taskId: string; data: Record<string, unknown>; createdAt: Date }, extra: Record<string, unknown> = {}) {
  // jsonb stores keys in its own order; lay them out as the spec shows them.
  const { status, attempt, percent, message, ...rest } = row.data
  return { taskId: row.taskId, ...extra, status, attempt, percent, message, ...rest, at: row.createdAt.toISOString() }
}

export const sseFrame = (id: number, event: string, data: unknown) =>
  `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`
