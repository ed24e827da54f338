import { createHash } from 'node:crypto'
import { Elysia } from 'elysia'
import stableStringify from 'safe-stable-stringify'
import * as v from 'valibot'
import { createBatcher } from '../db/batch.ts'
import { catalogue } from '../db/catalogue.ts'
import { isDataError } from '../db/client.ts'
import { taskInsertIdempotent } from '../db/idempotency.ts'
import { taskCancel, taskGet, taskInserter, taskList, taskRetry, type NewTask } from '../db/tasks.ts'
import { setEnqueuedTaskId, withEnqueueSpan } from '../observability/spans.ts'
import type { TraceCarrier } from '../observability/trace-context.ts'
import type { AppDeps } from './deps.ts'
import { conflict, fieldErrors, invalid, notFound } from './problem.ts'
import { CreateTask, CreateTaskBatch, defaultPageSize, encodeCursor, IdempotencyKey, isUuid, ListTasksQuery } from './schemas.ts'
import { taskResource } from './task-resource.ts'

/** A submission with the type's defaults filled in, carrying the trace it was enqueued in. */
function newTask(tenantId: string, body: CreateTask, trace: TraceCarrier): NewTask {
  const defaults = catalogue[body.type]
  return {
    id: Bun.randomUUIDv7(),
    tenantId,
    type: body.type,
    queue: body.queue ?? defaults.queue,
    priority: body.priority ?? 0,
    payload: body.payload,
    maxAttempts: body.maxAttempts ?? defaults.maxAttempts,
    timeoutSeconds: body.timeoutSeconds ?? defaults.timeoutSeconds,
    runAt: body.runAt ? new Date(body.runAt) : null,
    ...trace,
  }
}

const missing = (id: string) => notFound(`no task ${id}`)

function idempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  const parsed = v.safeParse(IdempotencyKey, header)
  if (!parsed.success) throw invalid(400, 'invalid Idempotency-Key header', fieldErrors(parsed.issues, '/headers/idempotency-key'))
  return parsed.output
}

/** Requests with the same meaning hash alike, whatever their key order or spacing. */
const requestHash = (body: unknown) => createHash('sha256').update(stableStringify(body) ?? '').digest()

const queueOf = (body: CreateTask) => ({ type: body.type, queue: body.queue ?? catalogue[body.type].queue })

export function taskRoutes({ sql, insertConnections, auth, tokens, metrics }: AppDeps) {
  // A submission is answered once it is on disk, but its workers hear of it sooner: its insert
  // commits without waiting for the disk, then a flush behind it makes it durable (taskInsertDurably).
  // A worker may so start a task one disk flush before its submitter is answered; a crash in that
  // window answers an error, and the task runs again if it is submitted again.
  const insertDurably = taskInserter(insertConnections)
  // Concurrent submissions share one INSERT (one commit, one NOTIFY per queue and tenant).
  const insert = createBatcher(insertDurably, { maxBatch: 500, maxInFlight: 2, isolate: isDataError })
  return new Elysia({ prefix: '/v1/tasks' })
    .derive(async ({ headers }) => ({ tenant: await auth.bearer(headers.authorization) }))
    .post('/', async ({ body, headers, tenant, set }) => {
      const key = idempotencyKey(headers['idempotency-key'])
      const stored = await withEnqueueSpan([queueOf(body)], async (trace) => {
        const task = newTask(tenant.id, body, trace)
        setEnqueuedTaskId(task.id)
        return key === undefined
          ? { outcome: 'created' as const, task: await insert(task) }
          : await taskInsertIdempotent(sql, key, requestHash(body), task)
      })
      if (stored.outcome === 'conflict') {
        throw conflict('this Idempotency-Key was used in the last 24 hours for a different request')
      }
      if (stored.outcome === 'created') metrics.submitted([stored.task])
      set.status = stored.outcome === 'created' ? 202 : 200
      if (stored.outcome === 'replayed') set.headers['idempotent-replayed'] = 'true'
      set.headers.location = `/v1/tasks/${stored.task.id}`
      return taskResource(stored.task, tokens)
    }, { body: CreateTask })
    .post('/batch', async ({ body, tenant, set }) => {
      // One statement: all the tasks are stored, or none.
      const stored = await withEnqueueSpan(body.tasks.map(queueOf), (trace) =>
        insertDurably(body.tasks.map((task) => newTask(tenant.id, task, trace))))
      metrics.submitted(stored)
      set.status = 202
      return { items: stored.map((task) => taskResource(task, tokens)) }
    }, { body: CreateTaskBatch })
    .get('/', async ({ query, tenant }) => {
      const limit = query.limit ?? defaultPageSize
      const rows = await taskList(sql, {
        tenantId: tenant.id,
        statuses: query.status,
        type: query.type,
        queue: query.queue,
        before: query.cursor,
        limit: limit + 1,
      })
      const items = rows.slice(0, limit)
      return {
        items: items.map((row) => taskResource(row, tokens)),
        nextCursor: rows.length > limit ? encodeCursor(items.at(-1)!.id) : null,
      }
    }, { query: ListTasksQuery })
    .get('/:id', async ({ params: { id }, tenant }) => {
      const task = isUuid(id) ? await taskGet(sql, tenant.id, id) : undefined
      if (!task) throw missing(id)
      return taskResource(task, tokens)
    })
    .post('/:id/cancel', async ({ params: { id }, tenant, set }) => {
      const cancel = isUuid(id) ? await taskCancel(sql, tenant.id, id) : { outcome: 'missing' as const }
      if (cancel.outcome === 'missing') throw missing(id)
      if (cancel.outcome === 'finished') throw conflict(`task ${id} has already finished (${cancel.task.status})`)
      set.status = 202
      return taskResource(cancel.task, tokens)
    })
    .post('/:id/retry', async ({ params: { id }, tenant, set }) => {
      const retry = isUuid(id) ? await taskRetry(sql, tenant.id, id) : { outcome: 'missing' as const }
      if (retry.outcome === 'missing') throw missing(id)
      if (retry.outcome === 'unfinished') {
        throw conflict(`only a failed or canceled task can be retried; task ${id} is ${retry.task.status}`)
      }
      set.status = 202
      return taskResource(retry.task, tokens)
    })
}
