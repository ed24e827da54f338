import type { TaskRow } from '../db/tasks.ts'
import type { StreamTokens } from './stream-tokens.ts'

const iso = (date: Date | null) => date?.toISOString() ?? null

/** The trace id inside a W3C traceparent: "00-<trace id>-<span id>-<flags>". */
export const traceIdOf = (traceparent: string | null) => traceparent?.split('-')[1] ?? null

/** A task as clients see it (the spec's task resource). */
export function taskResource(task: TaskRow, tokens: StreamTokens) {
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
    startedAt: iso(task.startedAt),
    finishedAt: iso(task.finishedAt),
    cancelRequested: task.cancelRequested,
    traceId: traceIdOf(task.traceparent),
    links: { self, events: `${self}/events?token=${token}`, cancel: `${self}/cancel` },
  }
}

export type TaskResource = ReturnType<typeof taskResource>
