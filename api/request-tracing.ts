import { propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api'
import { Elysia } from 'elysia'
import { runInSpan } from '../observability/spans.ts'

const tracer = trace.getTracer('taskcast-api')
/** Probes and scrapes would fill the traces with noise. */
const untraced = new Set(['/healthz', '/readyz', '/metrics'])

/**
 * One SERVER span per request, continuing the caller's trace when it sends a traceparent. The
 * whole request runs inside it (Elysia's wrap), so whatever the handler does (the enqueue span,
 * SQL, log lines) joins the trace. It is renamed after the route once the route is known.
 * A streaming response's span ends when its headers go out, not when the stream does.
 */
export const requestTracing = new Elysia({ name: 'taskcast-request-tracing' })
  .wrap((fn, request) => {
    const url = new URL(request.url)
    if (untraced.has(url.pathname)) return fn
    return ((...args: unknown[]) => {
      const parent = propagation.extract(ROOT_CONTEXT, Object.fromEntries(request.headers))
      const span = tracer.startSpan(request.method, {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': request.method,
          'url.path': url.pathname,
          'url.scheme': url.protocol.replace(':', ''),
          'user_agent.original': request.headers.get('user-agent') ?? undefined,
        },
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
