import type { ValidationError } from 'elysia'
import { isConnectionError, isDataError } from '../db/client.ts'
import type { Logger } from '../observability/log.ts'

export interface FieldError {
  /** JSON Pointer into the request part that failed: "/payload/seconds". */
  path: string
  message: string
}

/** An RFC 9457 problem: thrown anywhere in a request, answered as application/problem+json. */
export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail?: string,
    readonly errors?: FieldError[],
    readonly headers: Record<string, string> = {},
  ) {
    super(detail ?? title)
  }

  toResponse(instance?: string): Response {
    const body = { type: 'about:blank', title: this.title, status: this.status, detail: this.detail, instance, errors: this.errors }
    return new Response(JSON.stringify(body), {
      status: this.status,
      headers: { 'content-type': 'application/problem+json', ...this.headers },
    })
  }
}

export const notFound = (detail: string) => new Problem(404, 'Not Found', detail)
export const forbidden = (detail: string) => new Problem(403, 'Forbidden', detail)
export const conflict = (detail: string) => new Problem(409, 'Conflict', detail)
export const unauthorized = (detail: string) =>
  new Problem(401, 'Unauthorized', detail, undefined, { 'www-authenticate': 'Bearer realm="taskcast"' })
export const invalid = (status: 400 | 422, detail: string, errors: FieldError[]) =>
  new Problem(status, status === 422 ? 'Unprocessable Content' : 'Bad Request', detail, errors)
export const unavailable = (detail: string) =>
  new Problem(503, 'Service Unavailable', detail, undefined, { 'retry-after': '5' })

interface Issue {
  message: string
  path?: ReadonlyArray<PropertyKey | { key: unknown }>
}

/** Standard Schema issues as field errors, each path a JSON Pointer. */
export function fieldErrors(issues: readonly Issue[], prefix = ''): FieldError[] {
  return issues.map((issue) => ({
    path: prefix + (issue.path ?? []).map((segment) =>
      '/' + String(typeof segment === 'object' ? segment.key : segment).replaceAll('~', '~0').replaceAll('/', '~1')).join(''),
    message: issue.message,
  }))
}

/**
 * The one error handler: every failure leaves as problem+json. Client mistakes are 4xx with what
 * was wrong; a database that cannot be reached is 503 with Retry-After; anything else is logged
 * and answered 500 without internals.
 */
export function problemHandler(log: Logger) {
  return ({ code, error, request }: { code: unknown; error: unknown; request: Request }): Response => {
    const instance = new URL(request.url).pathname
    if (error instanceof Problem) return error.toResponse(instance)
    switch (code) {
      case 'PARSE': {
        const cause = (error as Error).cause
        return (cause instanceof Problem ? cause : new Problem(400, 'Bad Request', 'the request body could not be parsed'))
          .toResponse(instance)
      }
      case 'VALIDATION': {
        const validation = error as ValidationError
        if (validation.type === 'response') break
        type Standard = { '~standard'?: { validate(value: unknown): unknown } }
        const validator = validation.validator as (Standard & { schema?: Standard }) | undefined
        const standard = validator?.['~standard'] ?? validator?.schema?.['~standard']
        const result = standard?.validate(validation.value) as { issues?: Issue[] } | undefined
        const status = validation.type === 'body' ? 422 : 400
        return invalid(status, `invalid request ${validation.type}`, fieldErrors(result?.issues ?? [])).toResponse(instance)
      }
      case 'NOT_FOUND':
        return notFound(`no route for ${request.method} ${instance}`).toResponse(instance)
    }
    // Class 22, data exceptions: a value from the request that PostgreSQL cannot store or compare.
    if (isDataError(error)) {
      log.warn({ err: error, path: instance }, 'the database refused a value from a request')
      return new Problem(400, 'Bad Request', 'the request holds a value that cannot be stored').toResponse(instance)
    }
    if (isConnectionError(error)) {
      log.warn({ err: error, path: instance }, 'database unavailable')
      return unavailable('the database is unavailable; retry shortly').toResponse(instance)
    }
    log.error({ err: error, method: request.method, path: instance }, 'request failed')
    return new Problem(500, 'Internal Server Error', 'the server failed to handle this request').toResponse(instance)
  }
}
