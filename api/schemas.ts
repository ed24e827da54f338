import * as v from 'valibot'
import { catalogue, taskTypes, type Catalogue, type TaskType } from '../db/catalogue.ts'
import { QueueName, TaskStatus } from '../db/contracts.ts'

const wholeNumber = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max))

const Timestamp = v.pipe(
  v.string(),
  v.isoTimestamp('must be an ISO 8601 timestamp, e.g. 2026-01-01T12:00:00Z'),
  v.check((s) => !Number.isNaN(Date.parse(s)), 'is not a real point in time'),
)

const taskOptions = {
  queue: v.optional(QueueName),
  priority: v.optional(wholeNumber(-100, 100)),
  runAt: v.optional(Timestamp),
  maxAttempts: v.optional(wholeNumber(1, 100)),
  timeoutSeconds: v.optional(wholeNumber(1, 604_800)),
}

/** A submission of one task type, its payload checked by that type's schema; an omitted payload is checked as {}. */
const submission = <T extends TaskType>(type: T) => v.strictObject({
  type: v.literal(type),
  // The {} default is checked like a sent payload: its type says nothing (never) for {} to break.
  payload: v.optional(catalogue[type].payload as Catalogue[T]['payload'], {} as never),
  ...taskOptions,
})
type Submission = { [T in TaskType]: ReturnType<typeof submission<T>> }[TaskType]

/**
 * Elysia types a route's body by its schema's output, and the typed client (Eden) takes its
 * argument types from there. A submission's output only adds defaults to its input, so the input
 * type describes both; typed by it, clients may leave out what has a default.
 */
const typedAsInput = <S extends v.GenericSchema>(schema: S) => schema as v.GenericSchema<v.InferInput<S>, v.InferInput<S>>

/** POST /v1/tasks: one variant per catalogued type, each with that type's payload schema. */
export const CreateTask = typedAsInput(v.variant(
  'type',
  taskTypes.map(submission) as Submission[],
  (issue) => issue.expected === 'Object'
    ? 'send a JSON object: {"type": "…", "payload": {…}}'
    : issue.received === 'undefined'
      ? `type is required; known types: ${taskTypes.join(', ')}`
      : `unknown task type ${issue.received}; known types: ${taskTypes.join(', ')}`,
))
export type CreateTask = v.InferOutput<typeof CreateTask>

export const maxBatchSize = 1000

/** POST /v1/tasks/batch: up to 1000 tasks, stored all or none. */
export const CreateTaskBatch = v.strictObject({
  tasks: v.pipe(v.array(CreateTask), v.minLength(1, 'send at least one task'), v.maxLength(maxBatchSize, `send at most ${maxBatchSize} tasks`)),
})

/** The Idempotency-Key header: 1 to 255 visible ASCII characters. */
export const IdempotencyKey = v.pipe(v.string(), v.regex(/^[\x21-\x7e]{1,255}$/, 'must be 1 to 255 visible ASCII characters'))

/** Free text from a query string, which PostgreSQL must be able to store and compare. */
const QueryText = v.pipe(
  v.string(),
  v.maxLength(200),
  v.check((s) => !s.includes('\u0000') && s.isWellFormed(), 'cannot contain NUL or unpaired surrogates'),
)

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export const isUuid = (s: string) => uuidPattern.test(s)

/** Keyset cursors are opaque to clients: base64url of the last id of the previous page. */
export const encodeCursor = (id: string) => Buffer.from(id).toString('base64url')

export const defaultPageSize = 20

export const ListTasksQuery = v.object({
  // status=queued,running or status=queued&status=running (Elysia may hand either over as an array).
  status: v.optional(v.pipe(
    v.union([v.string(), v.array(v.string())]),
    v.transform((value) => [value].flat().flatMap((s) => s.split(','))),
    v.array(TaskStatus),
  )),
  type: v.optional(QueryText),
  queue: v.optional(QueueName),
  // No default here, so that the typed client, which sees the output type, may leave it out.
  limit: v.optional(v.pipe(v.string(), v.regex(/^\d+$/, 'must be a whole number'), v.transform(Number), v.minValue(1), v.maxValue(100))),
  cursor: v.optional(v.pipe(
    v.string(),
    v.transform((s) => Buffer.from(s, 'base64url').toString('latin1')),
    v.regex(uuidPattern, 'is not a cursor from a previous page'),
  )),
})

/** GET /v1/events: the tenant stream, optionally of one type and one queue. */
export const TenantEventsQuery = v.object({
  type: v.optional(QueryText),
  queue: v.optional(QueueName),
  token: v.optional(v.string()),
  lastEventId: v.optional(v.string()),
})

export const CreateStreamToken = v.nullish(v.strictObject({ taskId: v.optional(v.string()) }))
