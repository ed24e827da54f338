import { context, propagation, ROOT_CONTEXT, trace, type Context, type SpanContext } from '@opentelemetry/api'

/** W3C trace context as stored with a task. */
export interface TraceCarrier {
  traceparent: string | null
  tracestate: string | null
}

/** The active trace context, to store with a task so its execution joins the trace. */
export function currentTraceCarrier(): TraceCarrier {
  const carrier: Record<string, string> = {}
  propagation.inject(context.active(), carrier)
  return { traceparent: carrier.traceparent ?? null, tracestate: carrier.tracestate ?? null }
}

/** A context whose parent is the stored trace context (or the root, if there is none). */
export function contextFromCarrier({ traceparent, tracestate }: TraceCarrier): Context {
  if (!traceparent) return ROOT_CONTEXT
  return propagation.extract(ROOT_CONTEXT, tracestate ? { traceparent, tracestate } : { traceparent })
}

/** The span context a stored traceparent names, for a span link. */
export function spanContextFromCarrier(carrier: TraceCarrier): SpanContext | undefined {
  return trace.getSpanContext(contextFromCarrier(carrier))
}
