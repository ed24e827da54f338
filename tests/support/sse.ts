import { createParser, type EventSourceMessage } from 'eventsource-parser'

export interface SseEvent {
  id?: string
  event?: string
  data: any
}

export interface SseRead {
  /** The events in arrival order, data parsed as JSON. */
  events: SseEvent[]
  comments: string[]
  retry?: number
  /** Whether the server ended the stream (as opposed to `until` being met). */
  ended: boolean
}

/**
 * Reads an SSE response until the server ends it or `until` says stop; then lets go of the
 * response. Parsing is eventsource-parser's, the same as the `eventsource` client's.
 */
export async function readSse(response: Response, until: (read: SseRead) => boolean = () => false): Promise<SseRead> {
  const follow = followSse(response)
  try {
    await follow.waitFor((read) => read.ended || until(read), 30_000, 'the end of the stream')
    return { ...follow.read } // `ended` as it was: letting go below ends the stream from this side
  } finally {
    await follow.close()
  }
}

export const isTerminalEvent = (event: SseEvent) =>
  event.event === 'status' && ['succeeded', 'failed', 'canceled'].includes(event.data.status)

export interface SseFollow {
  read: SseRead
  /** Resolves once `until` holds for what has arrived (checked as each chunk arrives). */
  waitFor(until: (read: SseRead) => boolean, timeoutMs?: number, what?: string): Promise<SseRead>
  close(): Promise<void>
}

/** Follows an SSE response in the background, so a test can act between events. */
export function followSse(response: Response): SseFollow {
  const read: SseRead = { events: [], comments: [], ended: false }
  const waiters = new Set<() => void>()
  const parser = createParser({
    onEvent: (message: EventSourceMessage) => read.events.push({ id: message.id, event: message.event, data: JSON.parse(message.data) }),
    onComment: (comment) => read.comments.push(comment.trim()),
    onRetry: (ms) => (read.retry = ms),
  })
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
  const done = (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        parser.feed(value)
        for (const waiter of waiters) waiter()
      }
    } catch {
      // cancelled by close()
    }
    read.ended = true
    for (const waiter of waiters) waiter()
  })()
  return {
    read,
    waitFor(until, timeoutMs = 10_000, what = 'the expected events') {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (until(read)) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(read)
          } else if (read.ended) {
            waiters.delete(check)
            clearTimeout(timer)
            reject(new Error(`the stream ended before ${what}`))
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`no ${what} within ${timeoutMs} ms; got ${read.events.length} events`))
        }, timeoutMs)
        waiters.add(check)
        check()
      })
    },
    async close() {
      await reader.cancel().catch(() => {})
      await done
    },
  }
}
