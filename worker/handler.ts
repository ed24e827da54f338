import type { Span } from '@opentelemetry/api'
import type { PayloadOf, TaskType } from '../db/catalogue.ts'
import type { Logger } from '../observability/log.ts'

/** What a handler gets besides its payload. */
export interface TaskContext {
  taskId: string
  /** 1 on the first run, 2 on the first retry, … */
  attempt: number
  /** Fires on cancel, timeout or worker shutdown; long work should check it and stop. */
  signal: AbortSignal
  /**
   * Reports progress: percent from 0 to 100 and/or a message. Cheap to call often: at most ~10
   * reports a second are stored, and the last one always is.
   */
  progress(percent?: number, message?: string): void
  /** A logger whose lines carry the task id, type and attempt. */
  log: Logger
  /** The attempt's `task.execute` span: add attributes or events, or start child spans under it. */
  span: Span
}

/** Runs one task; the returned JSON value becomes the task's result. */
export type Handler<T extends TaskType> = (payload: PayloadOf<T>, ctx: TaskContext) => Promise<unknown>

/** Thrown by a handler: the task fails at once, with no further attempts. */
export class PermanentError extends Error {
  override name = 'PermanentError'
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it fires. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal.reason)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
