import { isSpanContextValid, trace } from '@opentelemetry/api'
import pino from 'pino'

export type Logger = pino.Logger

/** trace_id and span_id of the span active where a line is written, so a line leads to its trace. */
function traceFields() {
  const span = trace.getActiveSpan()?.spanContext()
  return span && isSpanContextValid(span) ? { trace_id: span.traceId, span_id: span.spanId } : {}
}

/**
 * JSON lines on stdout: {"level":"info","time":"…","service":"taskcast-api","message":"…",
 * "trace_id":"…","span_id":"…",…}. LOG_LEVEL sets the threshold (default info).
 */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { service },
    messageKey: 'message',
    errorKey: 'err',
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    mixin: traceFields,
  })
}
