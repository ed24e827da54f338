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
  const read: SseRead = { events: [], comments: [], ended: false }
  const parser = createParser({
    onEvent: (message: EventSourceMessage) => read.events.push({ id: message.id, event: message.event, data: JSON.parse(message.data) }),
    onComment: (comment) => read.comments.push(comment.trim()),
    onRetry: (ms) => (read.retry = ms),
  })
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
  try {
    while (!until(read)) {
      const { value, done } = await reader.read()
      if (done) {
        read.ended = true
        break
      }
      parser.feed(value)
    }
  } finally {
    await reader.cancel().catch(() => {})
  }
  return read
}

export const isTerminalEvent = (event: SseEvent) =>
  event.event === 'status' && ['succeeded', 'failed', 'canceled'].includes(event.data.status)
