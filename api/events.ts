import { Elysia } from 'elysia'
import { isTerminal } from '../db/contracts.ts'
import { tenantLatestEvent } from '../db/task-events.ts'
import { taskGet } from '../db/tasks.ts'
import { linkToTaskTrace } from '../observability/spans.ts'
import type { AppDeps } from './deps.ts'
import { forbidden, invalid, notFound } from './problem.ts'
import { CreateStreamToken, isUuid, TenantEventsQuery } from './schemas.ts'
import { sseHeaders } from './sse.ts'
import { taskEventStream } from './task-stream.ts'
import { tenantEventStream } from './tenant-stream.ts'

/** The Last-Event-ID header (or, for a new EventSource, which cannot send it, a query parameter). */
function parseLastEventId(value: string | undefined, path = '/headers/last-event-id'): number | undefined {
  if (value === undefined || value.trim() === '') return undefined
  if (!/^\d{1,15}$/.test(value.trim())) {
    throw invalid(400, 'Last-Event-ID must be the id of an event from this stream', [{ path, message: 'must be a whole number' }])
  }
  return Number(value.trim())
}

export function eventRoutes({ sql, hub, auth, tokens, log, ssePingMs }: AppDeps) {
  return new Elysia()
    .get('/v1/tasks/:id/events', async ({ params: { id }, headers, query, request, server }) => {
      const claims = await auth.stream(headers.authorization, query.token)
      const visible = isUuid(id) && (claims.taskId === null || claims.taskId === id)
      const task = visible ? await taskGet(sql, claims.tenantId, id) : undefined
      if (!task) throw notFound(`no task ${id}`)
      linkToTaskTrace(task)
      const afterSeq = parseLastEventId(headers['last-event-id'])
        ?? parseLastEventId(query.lastEventId, '/query/lastEventId') ?? 0
      // Resuming past the end of a finished task: 204 tells an EventSource to stop reconnecting.
      if (isTerminal(task.status) && afterSeq >= task.lastSeq) return new Response(null, { status: 204 })
      server?.timeout(request, 0) // pings keep the stream alive; no idle cut-off
      const body = taskEventStream({ sql, hub, log, taskId: id, afterSeq, pingMs: ssePingMs, signal: request.signal })
      return new Response(body, { headers: sseHeaders })
    })
    .get('/v1/events', async ({ headers, query, request, server }) => {
      const claims = await auth.stream(headers.authorization, query.token)
      if (claims.taskId !== null) throw forbidden('this stream token opens one task\'s stream only; ask for a token without taskId')
      const lastEventId = parseLastEventId(headers['last-event-id'])
        ?? parseLastEventId(query.lastEventId, '/query/lastEventId')
      // Without a resume point the stream starts after the latest event when it was opened.
      const start = lastEventId === undefined
        ? await tenantLatestEvent(sql, claims.tenantId).then(({ id, bound }) => ({ afterId: id, since: bound }))
        : { afterId: lastEventId, since: null }
      server?.timeout(request, 0) // pings keep the stream alive; no idle cut-off
      const body = tenantEventStream({
        sql, hub, log, tenantId: claims.tenantId, type: query.type, queue: query.queue, ...start, pingMs: ssePingMs, signal: request.signal,
      })
      return new Response(body, { headers: sseHeaders })
    }, { query: TenantEventsQuery })
    .post('/v1/stream-tokens', async ({ body, headers, set }) => {
      const tenant = await auth.bearer(headers.authorization)
      const taskId = body?.taskId ?? null
      if (taskId !== null && !(isUuid(taskId) && (await taskGet(sql, tenant.id, taskId)))) {
        throw notFound(`no task ${taskId}`)
      }
      const { token, expiresAt } = tokens.sign({ tenantId: tenant.id, taskId })
      set.status = 201
      return { token, expiresAt: expiresAt.toISOString() }
    }, { body: CreateStreamToken })
}
