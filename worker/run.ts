import * as v from 'valibot'
import { catalogue, isTaskType } from '../db/catalogue.ts'
import { isDataError, type Sql } from '../db/client.ts'
import type { Progress, TaskError } from '../db/contracts.ts'
import {
  taskCancelRunning,
  taskFail,
  taskRetryLater,
  type ClaimedTask,
  type Lease,
} from '../db/task-leases.ts'
import type { Span } from '@opentelemetry/api'
import type { Logger } from '../observability/log.ts'
import { recordFailure, withExecuteSpan, type TraceMode } from '../observability/spans.ts'
import { afterDeadline } from './deadlines.ts'
import { PermanentError, type TaskContext } from './handler.ts'
import { handlers } from './handlers/index.ts'
import { persist } from './persist.ts'
import { createProgressReporter, type ProgressReporter } from './progress.ts'

/** Why an attempt was aborted. */
export class TaskAbort extends Error {
  constructor(readonly why: 'canceled' | 'timeout' | 'shutdown' | 'lease-lost', message: string) {
    super(message)
    this.name = why === 'timeout' ? 'TimeoutError' : 'AbortError'
  }
}

export interface RunOptions {
  sql: Sql
  log: Logger
  workerId: string
  /** Aborted by the loop on cancel, shutdown or a lost lease; the run adds the timeout. */
  abort: AttemptAbort
  /** Stores a successful outcome (the loop batches them); false when the lease was lost. */
  succeed(lease: Lease, result: unknown): Promise<boolean>
  /** Stores a progress report (the loop batches them); false when the lease was lost. */
  reportProgress(lease: Lease, progress: Progress): Promise<boolean>
  /** Told when the handler has finished, before its outcome is stored: its slot can be reused. */
  onHandlerDone?: () => void
  /** Told when a failed attempt will run again, so the loop can wake up for it. */
  onRetryScheduled?: (at: Date) => void
  /** child: the attempt's span continues the enqueuing trace; link: a new trace linking to it. */
  traceMode?: TraceMode
}

/**
 * What stops one attempt: the loop aborts it on cancel, shutdown or a lost lease, the run on a
 * timeout. The AbortSignal a handler sees is made only when the handler asks for it: an
 * AbortController and an abort listener for every attempt cost a worker ~6 % of its CPU in a
 * drain of quick tasks.
 */
export class AttemptAbort {
  /** Why the attempt was aborted; undefined while it was not. */
  reason: TaskAbort | undefined
  #controller: AbortController | undefined
  #listener: (() => void) | undefined

  /** The handler's signal: aborted (with the reason) when the attempt is. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController()
      if (this.reason) this.#controller.abort(this.reason)
    }
    return this.#controller.signal
  }

  /** Aborts the attempt; only the first reason counts. */
  abort(reason: TaskAbort): void {
    if (this.reason) return
    this.reason = reason
    this.#controller?.abort(reason)
    this.#listener?.()
  }

  /** Settles when the attempt is aborted (at once if it was); for the run alone. */
  whenAborted(): Promise<'aborted'> {
    return new Promise((resolve) => {
      if (this.reason) resolve('aborted')
      else this.#listener = () => resolve('aborted')
    })
  }
}

/** How a run ended, for the loop (shutdown releases `interrupted` tasks in one statement). */
export type RunEnd = 'succeeded' | 'failed' | 'retrying' | 'canceled' | 'interrupted' | 'lease-lost'

const maxMessageLength = 2000

function toTaskError(error: unknown, permanent: boolean): TaskError {
  const e = error instanceof Error ? error : new Error(String(error))
  // jsonb cannot hold NUL characters or unpaired surrogates.
  const storable = (text: string) => text.replaceAll('\u0000', '').toWellFormed()
  return { message: storable(e.message.slice(0, maxMessageLength)), name: storable(e.name || 'Error'), retryable: !permanent }
}

/** Retry n waits min(maxSeconds, baseSeconds · 2^(n-1)) · a random factor in [0.5, 1). */
export function retryDelayMs(attempt: number, backoff: { baseSeconds: number; maxSeconds: number }): number {
  const seconds = Math.min(backoff.maxSeconds, backoff.baseSeconds * 2 ** (attempt - 1))
  return seconds * 1000 * (0.5 + Math.random() / 2)
}

/** A handler's result as it will be stored: plain JSON, or an error saying why it cannot be. */
function toJson(value: unknown): unknown {
  return value === undefined ? null : JSON.parse(JSON.stringify(value))
}

/**
 * Runs one claimed attempt inside its `task.execute <type>` span, in the trace the task was
 * enqueued in; the span carries progress as events, failures as exceptions, and the outcome.
 */
export async function runTask(task: ClaimedTask, options: RunOptions): Promise<RunEnd> {
  const info = { id: task.id, type: task.type, queue: task.queue, attempt: task.attempt, maxAttempts: task.maxAttempts }
  return withExecuteSpan(info, task, options.traceMode ?? 'child', async (span) => {
    const end = await runAttempt(task, options, span)
    span.setAttribute('taskcast.task.outcome', end)
    return end
  })
}

/**
 * Validates the payload, calls the handler with its context, and stores the outcome. Every write
 * is fenced by the lease (task id, attempt, worker), so an attempt that lost its lease cannot
 * overwrite a newer one.
 */
async function runAttempt(
  task: ClaimedTask,
  { sql, log: workerLog, workerId, abort, succeed, reportProgress, onHandlerDone, onRetryScheduled }: RunOptions,
  span: Span,
): Promise<RunEnd> {
  const lease: Lease = { id: task.id, attempt: task.attempt, workerId }
  // The attempt's logger and progress reporter are made when first used: the attempts of quick
  // handlers mostly use neither, and making them for every attempt cost a worker ~7 % of its CPU
  // in a drain.
  let taskLog: Logger | undefined
  const log = () => (taskLog ??= workerLog.child({ taskId: task.id, type: task.type, attempt: task.attempt }))

  // Outcomes are retried through database outages, never dropped; a lost lease refuses them.
  const store = <T>(write: () => Promise<T>) => persist(write, log, 'storing the outcome')

  const fail = async (error: unknown, permanent: boolean): Promise<RunEnd> => {
    recordFailure(span, error)
    const taskError = toTaskError(error, permanent)
    if (permanent || task.attempt >= task.maxAttempts) {
      log().warn({ err: error }, permanent ? 'task failed permanently' : 'task failed: out of attempts')
      return (await store(() => taskFail(sql, lease, taskError))) ? 'failed' : 'lease-lost'
    }
    const backoff = isTaskType(task.type) ? catalogue[task.type].backoff : { baseSeconds: 1, maxSeconds: 60 }
    const retryAt = new Date(Date.now() + retryDelayMs(task.attempt, backoff))
    log().warn({ err: error, retryAt }, 'attempt failed; will retry')
    if (!(await store(() => taskRetryLater(sql, lease, taskError, retryAt)))) return 'lease-lost'
    onRetryScheduled?.(retryAt)
    return 'retrying'
  }

  if (!isTaskType(task.type)) return fail(new PermanentError(`this worker has no handler for type ${task.type}`), true)
  const parsed = v.safeParse(catalogue[task.type].payload, task.payload)
  if (!parsed.success) {
    const issues = parsed.issues.map((issue) => `${v.getDotPath(issue) ?? 'payload'}: ${issue.message}`)
    return fail(new PermanentError(`invalid payload: ${issues.join('; ')}`), true)
  }

  let progress: ProgressReporter | undefined
  let handlerEnded = false
  const ctx: TaskContext = {
    taskId: task.id,
    attempt: task.attempt,
    get signal() {
      return abort.signal
    },
    progress(percent, message) {
      // Reports made after the handler ended (it may ignore its signal) are dropped, as a closed
      // reporter drops them.
      if (handlerEnded) return
      progress ??= createProgressReporter((value) => {
        span.addEvent('progress', { 'taskcast.progress.percent': value.percent, 'taskcast.progress.message': value.message })
        return persist(() => reportProgress(lease, value), log, 'storing progress')
      }, log())
      progress.report(percent, message)
    },
    get log() {
      return log()
    },
    span,
  }
  const handler = handlers[task.type] as (payload: unknown, ctx: TaskContext) => Promise<unknown>
  const clearDeadline = afterDeadline(
    task.timeoutSeconds * 1000,
    () => abort.abort(new TaskAbort('timeout', `timed out after ${task.timeoutSeconds} s`)),
  )
  // A handler that ignores its signal is not waited for: the outcome is decided when it fires.
  const aborted = abort.whenAborted()
  let outcome: { returned: unknown } | { threw: unknown } | 'aborted' = 'aborted'
  // A task canceled (or lost) while it waited for a slot never reaches its handler.
  if (!abort.reason) {
    try {
      const value = await Promise.race([handler(parsed.output, ctx), aborted])
      outcome = value === 'aborted' ? 'aborted' : { returned: value }
    } catch (error) {
      outcome = abort.reason ? 'aborted' : { threw: error }
    }
  }
  clearDeadline()
  handlerEnded = true
  await progress?.close()
  onHandlerDone?.()

  if (outcome === 'aborted') {
    const reason = abort.reason!
    span.addEvent(reason.why, { 'exception.message': reason.message })
    if (reason.why === 'shutdown') return 'interrupted'
    if (reason.why === 'lease-lost') {
      recordFailure(span, reason)
      return 'lease-lost'
    }
    if (reason.why === 'canceled') {
      log().info({}, 'task canceled')
      return (await store(() => taskCancelRunning(sql, lease))) ? 'canceled' : 'lease-lost'
    }
    return fail(reason, false)
  }
  if ('threw' in outcome) return fail(outcome.threw, outcome.threw instanceof PermanentError)

  let result: unknown
  try {
    result = toJson(outcome.returned)
  } catch (error) {
    return fail(new PermanentError(`the result is not JSON: ${(error as Error).message}`), true)
  }
  try {
    return (await store(() => succeed(lease, result))) ? 'succeeded' : 'lease-lost'
  } catch (error) {
    if (!isDataError(error)) throw error
    return fail(new PermanentError(`the result cannot be stored: ${(error as Error).message}`), true)
  }
}
