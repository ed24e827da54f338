import { Elysia } from 'elysia'
import { isTerminal } from '../db/contracts.ts'
import { taskGet } from '../db/tasks.ts'
import { linkToTaskTrace } from '../observability/spans.ts'
import type { AppDeps } from './deps.ts'
import { invalid, notFound } from './problem.ts'
import { CreateStreamToken, isUuid } from './schemas.ts'
import { taskEventStream } from './task-stream.ts'

const sseHeaders = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no', // tell nginx-style proxies not to buffer the stream
}

function parseLastEventId(header: string | undefined): number {
  if (header === undefined || header.trim() === '') return 0
  if (!/^\d{1,9}$/.test(header.trim())) {
    throw invalid(400, 'Last-Event-ID must be the id of an event from this stream',
      [{ path: '/headers/last-event-id', message: 'must be a whole number' }])
  }
  return Number(header.trim())
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
      // Resuming past the end of a finished task: 204 tells an EventSource to stop reconnecting.
      if (isTerminal(task.status) && afterSeq >= task.lastSeq) return new Response(null, { status: 204 })
      server?.timeout(request, 0) // pings keep the stream alive; no idle cut-off
      const body = taskEventStream({ sql, hub, log, taskId: id, afterSeq, pingMs: ssePingMs, signal: request.signal })
      return new Response(body, { headers: sseHeaders })
    })
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
