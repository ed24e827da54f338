import * as v from 'valibot'
import { Progress } from '../db/contracts.ts'
import type { Logger } from '../observability/log.ts'

export interface ProgressReporter {
  /** Validates and queues a report; throws a TypeError on a bad value. */
  report(percent?: number, message?: string): void
  /** Stores the latest pending report, if any; called before every status change. */
  flush(): Promise<void>
  /** Flushes, then ignores further reports (a handler may keep calling after it was aborted). */
  close(): Promise<void>
}

/**
 * Coalesces a handler's progress reports: the first is stored at once, later ones at most every
 * `intervalMs` (100 ms: ~10 events a second per task), and a report superseded while waiting is
 * dropped, except the latest, which flush() always stores.
 */
export function createProgressReporter(
  write: (progress: Progress) => Promise<unknown>,
  log: Logger,
  intervalMs = 100,
): ProgressReporter {
  let pending: Progress | undefined
  let timer: ReturnType<typeof setTimeout> | undefined
  let inFlight: Promise<void> | undefined
  let lastWriteAt = Number.NEGATIVE_INFINITY
  let closed = false

  function writePending(): Promise<void> {
    const value = pending
    pending = undefined
    if (!value) return Promise.resolve()
    lastWriteAt = performance.now()
    inFlight = write(value)
      .then(() => {}, (error) => log.warn({ err: error }, 'could not store progress'))
      .finally(() => {
        inFlight = undefined
        if (pending && !closed) schedule()
      })
    return inFlight
  }

  function schedule() {
    if (timer || inFlight) return
    const wait = lastWriteAt + intervalMs - performance.now()
    if (wait <= 0) return void writePending()
    timer = setTimeout(() => {
      timer = undefined
      void writePending()
    }, wait)
  }

  async function flush() {
    clearTimeout(timer)
    timer = undefined
    await inFlight
    await writePending()
  }

  return {
    report(percent, message) {
      if (closed) return
      const parsed = v.safeParse(Progress, { percent, message })
      if (!parsed.success) {
        throw new TypeError(`progress(${percent}, ${message}): ${parsed.issues.map((issue) => issue.message).join('; ')}`)
      }
      pending = parsed.output
      schedule()
    },
    flush,
    async close() {
      await flush()
      closed = true
    },
  }
}
