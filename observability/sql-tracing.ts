import { SpanKind, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api'
import type postgres from 'postgres'

const tracer = trace.getTracer('taskcast-sql')

/** A short name for a statement: its operation and main table, e.g. "UPDATE taskcast.tasks". */
export function statementSummary(text: string): string {
  const write = /\b(insert\s+into|(?<!\bfor\s+)update|delete\s+from)\s+([\w."]+)/i.exec(text)
  if (write) return `${write[1]!.split(/\s+/)[0]!.toUpperCase()} ${write[2]}`
  const read = /\bselect\b[\s\S]*?\bfrom\s+([\w."]+)/i.exec(text)
  if (read) return `SELECT ${read[1]}`
  return (/^\s*(\w+)/.exec(text)?.[1] ?? 'query').toUpperCase()
}

/** The statement as it ran (fragments spliced in), which names the span better than its outer template. */
function named(span: Span, text: string) {
  span.setAttribute('db.query.text', text)
  span.updateName(statementSummary(text))
}

interface TracedQuery {
  then: (...args: unknown[]) => unknown
  strings?: readonly string[]
}

/**
 * Gives each statement a CLIENT span, when it runs inside a recording span (a request or a task):
 * postgres.js has no instrumentation of its own, so this wraps its tag function once, and every
 * statement through it, in transactions too. A query starts running on its first `then`; that is
 * where the span starts, and it ends when the query settles. Statements run outside any trace
 * (the worker's polls, lease renewals, sweeps) make no spans.
 */
export function traceSql<T extends postgres.Sql>(sql: T): T {
  const url = sql.options
  const attributes: Attributes = {
    'db.system.name': 'postgresql',
    'db.namespace': url.database,
    'server.address': url.host?.[0],
    'server.port': url.port?.[0],
  }

  function instrument(query: TracedQuery) {
    if (!query || typeof query.then !== 'function') return query
    const then = query.then.bind(query)
    let started = false
    query.then = (...args: unknown[]) => {
      const parent = trace.getActiveSpan()
      if (!started && parent?.isRecording()) {
        started = true
        const text = (query.strings ?? []).join('?')
        const span = tracer.startSpan(statementSummary(text), { kind: SpanKind.CLIENT, attributes })
        then(
          (result: { statement?: { string?: string } }) => {
            named(span, result?.statement?.string ?? text)
            span.end()
          },
          (error: Error & { query?: string; code?: string }) => {
            named(span, error.query ?? text)
            if (error.code) span.setAttribute('db.response.status_code', error.code)
            span.recordException(error)
            span.setStatus({ code: SpanStatusCode.ERROR, message: error.message })
            span.end()
          },
        )
      }
      return then(...args)
    }
    return query
  }

  function wrap<S extends object>(target: S): S {
    return new Proxy(target, {
      apply(fn, self, args) {
        const result = Reflect.apply(fn as (...a: unknown[]) => unknown, self, args)
        // Tagged template calls run statements; sql(value) calls build fragments and identifiers.
        return Array.isArray(args[0]) && 'raw' in (args[0] as object) ? instrument(result as TracedQuery) : result
      },
      get(object, property, receiver) {
        const value = Reflect.get(object, property, receiver)
        if (property === 'unsafe') return (...args: unknown[]) => instrument((value as (...a: unknown[]) => TracedQuery)(...args))
        if (property === 'begin') {
          return (...args: unknown[]) => {
            const callback = args.pop() as (tx: postgres.TransactionSql) => unknown
            return (value as (...a: unknown[]) => unknown).call(object, ...args, (tx: postgres.TransactionSql) => callback(wrap(tx)))
          }
        }
        return typeof value === 'function' ? value.bind(object) : value
      },
    })
  }

  return wrap(sql)
}
