import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { newTenant, uniqueName } from './support/fixtures.ts'
import { killAll, postTask, spawnApi, spawnWorker } from './support/processes.ts'
import { readSse } from './support/sse.ts'

/**
 * Real api and worker processes export to an OTLP/HTTP receiver inside this test, which decodes
 * what arrives (OTLP/JSON; for protobuf it checks the raw bytes).
 */
interface Span {
  service: string
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: Record<string, unknown>
  events: Array<{ name: string; attributes: Record<string, unknown> }>
  links: Array<{ traceId: string; spanId: string }>
  status: { code?: number }
}

const SERVER = 2
const CLIENT = 3
const PRODUCER = 4
const CONSUMER = 5
const ERROR = 2

const received: Span[] = []
const protobufBodies: Uint8Array[] = []
let receiver: ReturnType<typeof Bun.serve>
let tenant: Awaited<ReturnType<typeof newTenant>>

type OtlpValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number }
const value = (v: OtlpValue) => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue ?? v.doubleValue)
const attributes = (list: Array<{ key: string; value: OtlpValue }> = []) => Object.fromEntries(list.map((a) => [a.key, value(a.value)]))

beforeAll(async () => {
  tenant = await newTenant()
  receiver = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      if (new URL(request.url).pathname !== '/v1/traces') return new Response('not found', { status: 404 })
      if (request.headers.get('content-type')?.includes('protobuf')) {
        protobufBodies.push(new Uint8Array(await request.arrayBuffer()))
        return new Response(new Uint8Array(), { headers: { 'content-type': 'application/x-protobuf' } })
      }
      const body = await request.json() as any
      for (const resourceSpans of body.resourceSpans ?? []) {
        const service = attributes(resourceSpans.resource.attributes)['service.name'] as string
        for (const scope of resourceSpans.scopeSpans) {
          for (const s of scope.spans) {
            received.push({
              service, traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId || undefined, name: s.name, kind: s.kind,
              attributes: attributes(s.attributes),
              events: (s.events ?? []).map((e: any) => ({ name: e.name, attributes: attributes(e.attributes) })),
              links: (s.links ?? []).map((l: any) => ({ traceId: l.traceId, spanId: l.spanId })),
              status: s.status ?? {},
            })
          }
        }
      }
      return Response.json({})
    },
  })
})
afterAll(async () => {
  await killAll()
  receiver.stop(true)
})

const otel = (protocol = 'http/json') => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.port}`,
  OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
})

/** Runs one task through real processes, then stops them, which flushes their spans. */
async function runTask(env: Record<string, string>, payload: Record<string, unknown>, headers: Record<string, string> = {}) {
  const queue = uniqueName('otel')
  const [api, worker] = await Promise.all([spawnApi(env), spawnWorker({ ...env, WORKER_QUEUES: queue })])
  const response = await postTask(api.url, tenant.auth, { type: 'demo.sleep', queue, payload }, headers)
  const task = await response.json() as any
  const stream = await readSse(await fetch(`${api.url}${task.links.events}`))
  expect(await Promise.all([api.stop('SIGTERM'), worker.stop('SIGTERM')])).toEqual([0, 0])
  return { task, stream, workerLogs: worker.logs }
}

describe('one trace from the HTTP request into the worker', () => {
  test('API and worker spans share the task\'s trace; each attempt is a child span with its progress and outcome', async () => {
    const { task, workerLogs } = await runTask(otel(), { seconds: 0.3, steps: 3, failTimes: 1 })
    const trace = received.filter((span) => span.traceId === task.traceId)
    expect(new Set(trace.map((span) => span.service))).toEqual(new Set(['taskcast-api', 'taskcast-worker']))
    const byId = new Map(trace.map((span) => [span.spanId, span]))

    const request = trace.find((span) => span.kind === SERVER && span.name === 'POST /v1/tasks')!
    expect(request).toMatchObject({ service: 'taskcast-api', parentSpanId: undefined })
    expect(request.attributes).toMatchObject({ 'http.request.method': 'POST', 'http.route': '/v1/tasks', 'http.response.status_code': 202 })

    const enqueue = trace.find((span) => span.kind === PRODUCER)!
    expect(enqueue).toMatchObject({ name: 'task.enqueue demo.sleep', parentSpanId: request.spanId })
    expect(enqueue.attributes).toMatchObject({
      'messaging.system': 'taskcast', 'messaging.operation.type': 'send', 'messaging.destination.name': task.queue, 'messaging.message.id': task.id,
    })
    const insert = trace.find((span) => span.kind === CLIENT && span.parentSpanId === enqueue.spanId)!
    expect(insert.name).toBe('INSERT taskcast.tasks')
    expect(insert.attributes).toMatchObject({ 'db.system.name': 'postgresql', 'db.query.text': expect.stringContaining('insert into taskcast.tasks') })

    const executions = trace.filter((span) => span.kind === CONSUMER).sort((a, b) => Number(a.attributes['taskcast.task.attempt']) - Number(b.attributes['taskcast.task.attempt']))
    expect(executions.map((span) => [span.name, span.service, span.parentSpanId, span.attributes['taskcast.task.attempt']])).toEqual([
      ['task.execute demo.sleep', 'taskcast-worker', enqueue.spanId, 1],
      ['task.execute demo.sleep', 'taskcast-worker', enqueue.spanId, 2],
    ])
    const [failed, succeeded] = executions as [Span, Span]
    expect(failed.status.code).toBe(ERROR)
    expect(failed.attributes).toMatchObject({ 'taskcast.task.outcome': 'retrying', 'messaging.operation.type': 'process', 'messaging.destination.name': task.queue, 'taskcast.task.id': task.id })
    expect(failed.events.find((event) => event.name === 'exception')!.attributes['exception.message']).toContain('failing on purpose')
    expect(succeeded.status.code).not.toBe(ERROR)
    expect(succeeded.attributes['taskcast.task.outcome']).toBe('succeeded')
    expect(succeeded.events.filter((event) => event.name === 'progress').map((event) => event.attributes['taskcast.progress.percent'])).toEqual([33, 67, 100])

    // Every worker span's parent chain reaches the API's request span.
    const rootOf = (span: Span): Span => (span.parentSpanId && byId.has(span.parentSpanId) ? rootOf(byId.get(span.parentSpanId)!) : span)
    for (const span of trace.filter((s) => s.service === 'taskcast-worker')) expect(rootOf(span).spanId).toBe(request.spanId)
    // The worker's SQL is in the trace, under the attempt that ran it.
    expect(trace.some((span) => span.kind === CLIENT && span.parentSpanId === succeeded.spanId && span.name === 'UPDATE taskcast.tasks')).toBe(true)

    // Log lines written while running the task carry its trace and the attempt's span.
    const retryLine = workerLogs.find((line) => line.message === 'attempt failed; will retry')!
    expect(retryLine).toMatchObject({ taskId: task.id, trace_id: task.traceId, span_id: failed.spanId })

    // The stream request is a trace of its own that links to the task's.
    const streamSpan = received.find((span) => span.name === 'GET /v1/tasks/:id/events' && span.links.some((link) => link.traceId === task.traceId))
    expect(streamSpan).toBeDefined()
  }, 60_000)

  test('a traceparent sent with the request continues the caller\'s trace', async () => {
    const callerTrace = crypto.getRandomValues(new Uint8Array(16)).toHex()
    const callerSpan = crypto.getRandomValues(new Uint8Array(8)).toHex()
    const { task } = await runTask(otel(), { seconds: 0 }, { traceparent: `00-${callerTrace}-${callerSpan}-01` })
    expect(task.traceId).toBe(callerTrace)
    const request = received.find((span) => span.traceId === callerTrace && span.kind === SERVER)!
    expect(request.parentSpanId).toBe(callerSpan)
    expect(received.some((span) => span.traceId === callerTrace && span.service === 'taskcast-worker')).toBe(true)
  }, 60_000)

  test('TASKCAST_TRACE_MODE=link: each execution starts its own trace, linked to the enqueue span', async () => {
    const { task } = await runTask({ ...otel(), TASKCAST_TRACE_MODE: 'link' }, { seconds: 0 })
    const enqueue = received.find((span) => span.traceId === task.traceId && span.kind === PRODUCER)!
    const execution = received.find((span) => span.kind === CONSUMER && span.attributes['taskcast.task.id'] === task.id)!
    expect(execution.traceId).not.toBe(task.traceId)
    expect(execution.parentSpanId).toBeUndefined()
    expect(execution.links).toEqual([{ traceId: task.traceId, spanId: enqueue.spanId }])
  }, 60_000)

  test('with no exporter configured, nothing is sent, and the worker\'s log lines still name the task\'s trace', async () => {
    const before = received.length
    const { task, workerLogs } = await runTask({}, { seconds: 0, failTimes: 1 })
    expect(task.traceId).toMatch(/^[0-9a-f]{32}$/)
    expect(task.traceId).not.toMatch(/^0+$/)
    const retryLine = workerLogs.find((line) => line.message === 'attempt failed; will retry')!
    expect(retryLine).toMatchObject({ taskId: task.id, trace_id: task.traceId })
    expect(received.length).toBe(before)
  }, 60_000)

  test('with no exporter configured, a traceparent sent with the request still names the task\'s trace', async () => {
    const callerTrace = crypto.getRandomValues(new Uint8Array(16)).toHex()
    const callerSpan = crypto.getRandomValues(new Uint8Array(8)).toHex()
    const { task } = await runTask({}, { seconds: 0 }, { traceparent: `00-${callerTrace}-${callerSpan}-01` })
    expect(task.traceId).toBe(callerTrace)
  }, 60_000)

  test('OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf sends protobuf', async () => {
    const before = protobufBodies.length
    const { task } = await runTask(otel('http/protobuf'), { seconds: 0 })
    const bodies = protobufBodies.slice(before)
    expect(bodies.length).toBeGreaterThan(0)
    const traceIdBytes = Buffer.from(task.traceId, 'hex')
    expect(bodies.some((body) => Buffer.from(body).includes(traceIdBytes))).toBe(true)
    expect(bodies.some((body) => Buffer.from(body).includes(Buffer.from('task.execute demo.sleep')))).toBe(true)
  }, 60_000)
})
