import * as v from 'valibot'
import { Progress, TaskStatus } from '../db/contracts.ts'
import type { TaskRow } from '../db/tasks.ts'
import type { StreamTokens } from './stream-tokens.ts'

const Timestamp = v.pipe(v.string(), v.isoTimestamp(), v.description('ISO 8601, UTC'))
const wholeNumber = v.pipe(v.number(), v.integer())

/**
 * A task as clients see it (the spec's task resource). The routes are not validated against it:
 * it types what taskResource() returns, and so the typed client, and it is the documented shape.
 */
export const TaskResource = v.pipe(
  v.object({
    id: v.pipe(v.string(), v.uuid(), v.description('UUIDv7')),
    type: v.pipe(v.string(), v.description('a task type from the catalogue')),
    queue: v.string(),
    status: v.pipe(TaskStatus, v.description('queued covers waiting, delayed (runAt in the future) and waiting for a retry; failed means out of attempts or a permanent error')),
    priority: v.pipe(wholeNumber, v.description('-100..100, higher runs first')),
    payload: v.pipe(v.unknown(), v.description('as submitted, with the defaults of its type filled in')),
    result: v.pipe(v.unknown(), v.description('what the handler returned; null until the task succeeds')),
    error: v.pipe(
      v.nullable(v.object({ message: v.string(), name: v.string(), retryable: v.boolean() })),
      v.description('the last error, or null'),
    ),
    progress: v.pipe(v.nullable(Progress), v.description('the latest progress report, or null')),
    attempt: wholeNumber,
    maxAttempts: wholeNumber,
    timeoutSeconds: wholeNumber,
    runAt: Timestamp,
    createdAt: Timestamp,
    startedAt: v.nullable(Timestamp),
    finishedAt: v.nullable(Timestamp),
    cancelRequested: v.boolean(),
    traceId: v.pipe(v.nullable(v.string()), v.description('the OpenTelemetry trace id (32 hex characters) of the request that submitted it')),
    links: v.object({
      self: v.string(),
      events: v.pipe(v.string(), v.description('the task\'s SSE stream, with a read-only stream token valid for an hour')),
      cancel: v.string(),
    }),
  }),
  v.title('Task'),
)
export type TaskResource = v.InferOutput<typeof TaskResource>

/**
 * A time as ISO 8601. The tasks of one insert share their times (created, and to run, now), so
 * the last one is kept: a batch of 1,000 tasks formats one, not 2,000.
 */
let lastTime = Number.NaN
let lastIso = ''
function iso(date: Date): string {
  const time = date.getTime()
  if (time !== lastTime) {
    lastTime = time
    lastIso = date.toISOString()
  }
  return lastIso
}

/** The trace id inside a W3C traceparent, "00-<trace id>-<span id>-<flags>", as stored by the API. */
export const traceIdOf = (traceparent: string | null) => (traceparent ? traceparent.slice(3, 35) : null)

export function taskResource(task: TaskRow, tokens: StreamTokens): TaskResource {
  const self = `/v1/tasks/${task.id}`
  const { token } = tokens.sign({ tenantId: task.tenantId, taskId: task.id })
  return {
    id: task.id,
    type: task.type,
    queue: task.queue,
    status: task.status,
    priority: task.priority,
    payload: task.payload,
    result: task.result ?? null,
    error: task.error,
    progress: task.progress,
    attempt: task.attempt,
    maxAttempts: task.maxAttempts,
    timeoutSeconds: task.timeoutSeconds,
    runAt: iso(task.runAt),
    createdAt: iso(task.createdAt),
    startedAt: task.startedAt && iso(task.startedAt),
    finishedAt: task.finishedAt && iso(task.finishedAt),
    cancelRequested: task.cancelRequested,
    traceId: traceIdOf(task.traceparent),
    links: { self, events: `${self}/events?token=${token}`, cancel: `${self}/cancel` },
  }
}
