import * as v from 'valibot'

/** Shapes shared by the API and the worker: what is stored in tasks and task_events. */

export const taskStatuses = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const
export const TaskStatus = v.picklist(taskStatuses)
export type TaskStatus = v.InferOutput<typeof TaskStatus>

export const terminalStatuses: readonly TaskStatus[] = ['succeeded', 'failed', 'canceled']
export const isTerminal = (status: string) => (terminalStatuses as readonly string[]).includes(status)

export const QueueName = v.pipe(v.string(), v.regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, 'lowercase letters, digits, "_", "." or "-", at most 63'))

/** What a handler reports; at least one of the two. */
export const Progress = v.pipe(
  v.strictObject({
    percent: v.optional(v.pipe(v.number(), v.minValue(0), v.maxValue(100))),
    message: v.optional(v.pipe(v.string(), v.maxLength(1000))),
  }),
  v.check((p) => p.percent !== undefined || p.message !== undefined, 'give percent, message or both'),
)
export type Progress = v.InferOutput<typeof Progress>

/** The last error of a task, as stored and as clients see it. */
export interface TaskError {
  message: string
  name: string
  retryable: boolean
}

/** data of a stored status event (the stream adds taskId and at). */
export interface StatusEventData {
  status: TaskStatus
  attempt: number
  result?: unknown
  error?: TaskError
  retryAt?: string
  reason?: string
}
