import type { Sql } from '../db/client.ts'
import { tenantEventsAfter } from '../db/task-events.ts'
import type { Logger } from '../observability/log.ts'
import type { EventHub } from './hub.ts'
import { eventData, eventStream, sseFrame } from './sse.ts'

export interface TenantStreamOptions {
  sql: Sql
  hub: EventHub
  log: Logger
  tenantId: string
  type?: string
  queue?: string
  /** Send only events after this global id: Last-Event-ID, or the latest id when the stream opened. */
  afterId: number
  /** The running bound of the read that gave `afterId`, if it was read (see tenantLatestEvent). */
  since: string | null
  pingMs: number
  /** Aborts when the client goes away. */
  signal: AbortSignal
}

const pageSize = 500
// While a newer event waits for older transactions to end, read again after 5, 10, 20… ms.
const firstHoldMs = 5
const maxHoldMs = 200

/**
 * Every event of a tenant's tasks (optionally of one type and queue) as an SSE body, `id:` the
 * global event id, in id order, resumable by Last-Event-ID with no event skipped or repeated.
 *
 * Global ids are not committed in order, so an event is sent only once no transaction that could
 * still commit a lower id is running: everything up to the highest id one read saw is final once
 * the transactions running during that read have ended (`settled`, see tenantEventsAfter). Newer
 * events wait for a later read, a few milliseconds on.
 */
export function tenantEventStream(options: TenantStreamOptions): ReadableStream<Uint8Array> {
  const { sql, hub, log, tenantId, type, queue, pingMs, signal } = options
  let cursor = options.afterId
  /** The running bound of the read that saw `seenUpTo`, the highest id seen. */
  let since = options.since
  let seenUpTo = cursor
  let holdMs = firstHoldMs

  return eventStream({
    log,
    context: { tenantId },
    pingMs,
    signal,
    subscribe: (wake, end) => hub.subscribeTenant(tenantId, wake, end),
    async read(send) {
      for (;;) {
        const read = await tenantEventsAfter(sql, { tenantId, afterId: cursor, type, queue, since, limit: pageSize })
        if (signal.aborted) return 'end'
        const finalUpTo = read.settled ? seenUpTo : cursor
        let held = false
        for (const row of read.rows) {
          if (row.id > finalUpTo) {
            held = true
            break
          }
          send(sseFrame(row.id, row.kind, eventData(row, { type: row.type, queue: row.queue, seq: row.seq })))
          cursor = row.id
        }
        if (read.settled) {
          since = read.bound
          seenUpTo = Math.max(cursor, read.rows.at(-1)?.id ?? 0)
        }
        if (held) {
          const wait = holdMs
          holdMs = Math.min(holdMs * 2, maxHoldMs)
          return { readAgainInMs: wait }
        }
        holdMs = firstHoldMs
        if (read.rows.length < pageSize) return 'caught-up'
      }
    },
  })
}
