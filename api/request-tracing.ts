import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type TextMapGetter } from '@opentelemetry/api'
import { Elysia } from 'elysia'
import { runInSpan, spansExported } from '../observability/spans.ts'

const tracer = trace.getTracer('taskcast-api')
/** Probes and scrapes would fill the traces with noise. */
const untraced = new Set(['/healthz', '/readyz', '/metrics'])

/** The caller's trace context, read from the request's own headers (no copy of them all). */
const fromHeaders: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
}

/** "http://host:port/path?query" → "/path", without building a URL. */
function pathOf(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2)
  if (start === -1) return '/'
  const end = url.indexOf('?', start)
  return end === -1 ? url.slice(start) : url.slice(start, end)
}

/**
 * One SERVER span per request, continuing the caller's trace when it sends a traceparent. The
 * whole request runs inside it (Elysia's wrap), so whatever the handler does (the enqueue span,
 * SQL, log lines) joins the trace. It is renamed after the route once the route is known.
 * A streaming response's span ends when its headers go out, not when the stream does.
 */
export const requestTracing = new Elysia({ name: 'taskcast-request-tracing' })
  .wrap((fn, request) => {
    const path = pathOf(request.url)
    if (untraced.has(path)) return fn
    return ((...args: unknown[]) => {
      const parent = propagation.extract(ROOT_CONTEXT, request.headers, fromHeaders)
      const span = tracer.startSpan(request.method, {
        kind: SpanKind.SERVER,
        attributes: spansExported()
          ? {
              'http.request.method': request.method,
              'url.path': path,
              'url.scheme': request.url.slice(0, request.url.indexOf(':')),
              'user_agent.original': request.headers.get('user-agent') ?? undefined,
            }
          : undefined,
      }, parent)
      return runInSpan(span, parent, async () => {
        const response = (await (fn as (...a: unknown[]) => unknown)(...args)) as Response
        span.setAttribute('http.response.status_code', response.status)
        if (response.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
        return response
      })
    }) as unknown as typeof fn
  })
  .onBeforeHandle({ as: 'global' }, ({ request, route }) => {
    const template = route.length > 1 ? route.replace(/\/$/, '') : route // "/v1/tasks/" is the prefix's root
    const span = trace.getActiveSpan()
    span?.updateName(`${request.method} ${template}`)
    span?.setAttribute('http.route', template)
  })
