import { context, INVALID_SPAN_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type SpanOptions } from '@opentelemetry/api'
import { contextFromCarrier, currentTraceCarrier, spanContextFromCarrier, type TraceCarrier } from './trace-context.ts'

/**
 * The spans that carry a task across services, with the OpenTelemetry messaging conventions:
 * the API's `task.enqueue <type>` (PRODUCER) and the worker's `task.execute <type>` (CONSUMER),
 * one per attempt, joined through the W3C trace context stored with the task.
 */
const tracer = trace.getTracer('taskcast')

export type TraceMode = 'child' | 'link'

let exported = true

/**
 * Told by initTelemetry whether spans leave the process. When they do not, an attempt runs under
 * a non-recording span that carries its task's stored trace context (log lines still name the
 * trace), and is spared the ids, attributes and context parsing of a span nobody will see.
 */
export function setSpansExported(value: boolean): void {
  exported = value
}

/**
 * Whether spans leave the process (see setSpansExported). Where they do not, a span is started
 * without attributes: the SDK copies and checks every attribute of a span before its sampler says
 * the span is not recorded, and those copies were most of the API's tracing work on each request.
 */
export const spansExported = (): boolean => exported

export interface TaskInfo {
  id: string
  type: string
  queue: string
  attempt: number
  maxAttempts: number
}

const messaging = (operation: 'send' | 'process', name: string): Attributes => ({
  'messaging.system': 'taskcast',
  'messaging.operation.type': operation,
  'messaging.operation.name': name,
})

/**
 * Runs `enqueue` inside a PRODUCER span and hands it the trace context to store with the tasks.
 * One span per request: a batch is one send of many messages.
 */
export async function withEnqueueSpan<T>(
  tasks: ReadonlyArray<{ type: string; queue: string }>,
  enqueue: (carrier: TraceCarrier) => Promise<T>,
): Promise<T> {
  const span = exported
    ? tracer.startSpan(...enqueueSpan(tasks))
    : tracer.startSpan('task.enqueue', { kind: SpanKind.PRODUCER })
  return runInSpan(span, context.active(), () => enqueue(currentTraceCarrier()))
}

/** The name and options of an enqueue span that is exported. */
function enqueueSpan(tasks: ReadonlyArray<{ type: string; queue: string }>): [string, SpanOptions] {
  const types = [...new Set(tasks.map((task) => task.type))]
  const queues = [...new Set(tasks.map((task) => task.queue))]
  const attributes: Attributes = {
    ...messaging('send', 'enqueue'),
    'messaging.destination.name': queues.length === 1 ? queues[0] : undefined,
    'messaging.batch.message_count': tasks.length > 1 ? tasks.length : undefined,
    'taskcast.task.type': types.length === 1 ? types[0] : undefined,
  }
  return [`task.enqueue ${types.length === 1 ? types[0] : 'batch'}`, { kind: SpanKind.PRODUCER, attributes }]
}

/** Names the task on its enqueue span once its id is known. */
export function setEnqueuedTaskId(id: string): void {
  trace.getActiveSpan()?.setAttribute('messaging.message.id', id)
}

/**
 * Runs one attempt inside its CONSUMER span. In `child` mode the span continues the enqueuing
 * trace; in `link` mode (the convention for long-delayed work) it starts a trace of its own that
 * links to the enqueue span.
 */
export async function withExecuteSpan<T>(
  task: TaskInfo,
  carrier: TraceCarrier,
  mode: TraceMode,
  execute: (span: Span) => Promise<T>,
): Promise<T> {
  if (!exported) {
    const stored = contextFromCarrier(carrier)
    const span = trace.wrapSpanContext(trace.getSpanContext(stored) ?? INVALID_SPAN_CONTEXT)
    return runInSpan(span, stored, () => execute(span))
  }
  const enqueued = spanContextFromCarrier(carrier)
  const parent = mode === 'child' ? contextFromCarrier(carrier) : context.active()
  const span = tracer.startSpan(`task.execute ${task.type}`, {
    kind: SpanKind.CONSUMER,
    root: mode === 'link',
    links: mode === 'link' && enqueued ? [{ context: enqueued }] : [],
    attributes: {
      ...messaging('process', 'execute'),
      'messaging.destination.name': task.queue,
      'messaging.message.id': task.id,
      'taskcast.task.id': task.id,
      'taskcast.task.type': task.type,
      'taskcast.task.attempt': task.attempt,
      'taskcast.task.max_attempts': task.maxAttempts,
    },
  }, parent)
  return runInSpan(span, parent, () => execute(span))
}

/**
 * Runs `fn` with `span` active (as a child of `parent`), records a thrown error on it, and ends
 * it when `fn` settles.
 */
export function runInSpan<T>(span: Span, parent: Context, fn: () => Promise<T>): Promise<T> {
  return context.with(trace.setSpan(parent, span), async () => {
    try {
      return await fn()
    } catch (error) {
      recordFailure(span, error)
      throw error
    } finally {
      span.end()
    }
  })
}

/** Records a failed attempt on its span: the exception, and status ERROR. */
export function recordFailure(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : new Error(String(error)))
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) })
}

/** Links the active span (an SSE request) to the trace a task belongs to. */
export function linkToTaskTrace(carrier: TraceCarrier): void {
  const target = spanContextFromCarrier(carrier)
  if (target) trace.getActiveSpan()?.addLink({ context: target })
}
