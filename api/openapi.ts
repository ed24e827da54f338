import { openapi } from '@elysiajs/openapi'
import { toJsonSchema, toJsonSchemaDefs } from '@valibot/to-json-schema'
import { Elysia } from 'elysia'
import * as v from 'valibot'
import { catalogue, taskTypes } from '../db/catalogue.ts'
import { defaultPageSize } from './schemas.ts'
import { TaskResource } from './task-resource.ts'

/**
 * GET /openapi.json and GET /docs. @elysiajs/openapi builds the document from the routes: their
 * paths, and their valibot body and query schemas (converted by @valibot/to-json-schema, so the
 * document and the validation cannot drift apart). What no route schema says (summaries,
 * responses, error statuses, headers a handler reads itself) is in `operations` below, merged in
 * by method and path, so the routes stay as they are. Responses are documentation only: no route
 * validates what it answers.
 */

// ---- Response bodies, as valibot schemas ---------------------------------------------------------

const FieldError = v.object({
  path: v.pipe(v.string(), v.description('JSON Pointer to the offending value, e.g. /payload/seconds or /query/limit')),
  message: v.string(),
})

/** The body of every error answer (RFC 9457), content type application/problem+json. */
export const Problem = v.pipe(
  v.object({
    type: v.pipe(v.string(), v.description('about:blank: the status and title say it all')),
    title: v.pipe(v.string(), v.description('the HTTP status text, e.g. Unprocessable Content')),
    status: v.pipe(v.number(), v.integer()),
    detail: v.optional(v.pipe(v.string(), v.description('what went wrong, for a person'))),
    instance: v.optional(v.pipe(v.string(), v.description('the request path'))),
    errors: v.optional(v.pipe(v.array(FieldError), v.description('one entry per invalid field'))),
  }),
  v.title('Problem'),
  v.description('An RFC 9457 problem: application/problem+json'),
)

const Timestamp = v.pipe(v.string(), v.isoTimestamp())

const TaskList = v.pipe(
  v.object({
    items: v.array(TaskResource),
    nextCursor: v.pipe(v.nullable(v.string()), v.description('pass as cursor to get the next page; null on the last page')),
  }),
  v.title('TaskList'),
)
const TaskBatch = v.pipe(v.object({ items: v.array(TaskResource) }), v.title('TaskBatch'))
const StreamToken = v.pipe(
  v.object({
    token: v.pipe(v.string(), v.description('send as ?token= on the stream it opens')),
    expiresAt: Timestamp,
  }),
  v.title('StreamToken'),
)
const Health = v.object({ status: v.literal('ok') })
const Ready = v.object({ status: v.literal('ready'), schemaVersion: v.pipe(v.number(), v.integer()) })

const components = { Problem, Task: TaskResource, TaskList, TaskBatch, StreamToken, Health, Ready }

/** Schemas that refer to one another through #/components/schemas/NAME. */
const componentSchemas = toJsonSchemaDefs(components, {
  target: 'draft-2020-12',
  errorMode: 'ignore',
  overrideRef: ({ referenceId }) => `#/components/schemas/${referenceId}`,
})

/**
 * Route schemas are converted as input: what a client sends, before transforms (limit is a
 * string of digits) and with defaults shown. `errorMode: 'ignore'` leaves out what JSON Schema
 * cannot say (checks, transforms) instead of dropping the whole schema.
 */
function requestJsonSchema(schema: unknown) {
  const { $schema: _, ...jsonSchema } = toJsonSchema(schema as v.GenericSchema, {
    target: 'draft-2020-12',
    errorMode: 'ignore',
    typeMode: 'input',
  })
  return jsonSchema
}

// ---- Operations ---------------------------------------------------------------------------------

const ref = (name: keyof typeof components) => ({ $ref: `#/components/schemas/${name}` })

const errorDescriptions = {
  400: 'the request is malformed: invalid JSON, query parameter or header',
  401: 'no API key, or one that is not valid (or, on a stream, a stream token that is not valid or has expired)',
  403: 'the credentials are valid but do not open this resource',
  404: 'no such task for this tenant (another tenant\'s task answers exactly the same)',
  409: 'the task is not in a state that allows this',
  413: 'the body exceeds TASKCAST_MAX_PAYLOAD_BYTES',
  415: 'the body is not JSON (content-type: application/json)',
  422: 'the body fails its schema: an unknown task type, or a payload that does not match the type\'s schema; `errors` lists each field',
  500: 'an unexpected failure; logged with its trace id, answered without internals',
  503: 'the database is unavailable; retry after Retry-After seconds',
} as const
type ErrorStatus = keyof typeof errorDescriptions

/** Error answers: problem+json, each with what it means on this route (or the general meaning). */
function problems(statuses: Array<ErrorStatus | [ErrorStatus, string]>) {
  return Object.fromEntries([...statuses, 500 as const].map((entry) => {
    const [status, description] = Array.isArray(entry) ? entry : [entry, errorDescriptions[entry]]
    return [status, {
      description,
      ...(status === 503 ? { headers: { 'Retry-After': { schema: { type: 'integer' }, description: 'seconds' } } } : {}),
      content: { 'application/problem+json': { schema: ref('Problem') } },
    }]
  }))
}

const json = (description: string, schema: object, headers?: Record<string, object>) =>
  ({ description, ...(headers ? { headers } : {}), content: { 'application/json': { schema } } })

const eventStreamExample = `retry: 2000

id: 3
event: progress
data: {"taskId":"0193…","percent":40,"message":"step 2/5","at":"2026-01-01T12:00:02.000Z"}

id: 4
event: status
data: {"taskId":"0193…","status":"succeeded","attempt":1,"result":{},"at":"2026-01-01T12:00:05.000Z"}
`
const eventStream = (description: string) => ({
  description,
  content: { 'text/event-stream': { schema: { type: 'string' }, example: eventStreamExample } },
})

const taskId = { name: 'id', in: 'path', required: true, description: 'the task id', schema: { type: 'string' } }
const lastEventIdHeader = (description: string) =>
  ({ name: 'Last-Event-ID', in: 'header', required: false, description, schema: { type: 'string', pattern: '^\\d+$' } })
const streamTokenQuery = (description: string) =>
  ({ name: 'token', in: 'query', required: false, description, schema: { type: 'string' } })

const taskCreated = (description: string) => json(description, ref('Task'))
const publicRoute = { security: [] }
const streamAuth = { security: [{ bearer: [] }, { streamToken: [] }] }

interface Parameter { name: string; in: string; [key: string]: unknown }
interface Operation { parameters?: Parameter[]; requestBody?: unknown; [key: string]: unknown }
interface Document { paths: Record<string, Record<string, Operation>>; [key: string]: unknown }
/** An operation as `operations` describes it. */
interface Described extends Operation { operationId: string; tags: string[]; summary: string; responses: Record<number, object> }

/** What each route tells the document beyond its schemas, by method and path. */
const operations = {
  'POST /v1/tasks': {
    operationId: 'createTask',
    tags: ['tasks'],
    summary: 'Submit a task',
    description: 'Validates the payload against the schema of its type (an unknown type or an invalid payload is 422 with the field errors, before anything is stored), stores the task and answers at once; a worker runs it. `payload`, `queue`, `maxAttempts` and `timeoutSeconds` default to the type\'s catalogue entry. With `Idempotency-Key`, the same key and body from the same tenant within 24 h return the first task with 200 and `Idempotent-Replayed: true`; the same key with another body is 409.\n\nTask types: ' +
      taskTypes.map((type) => `\`${type}\`: ${catalogue[type].description}`).join(' '),
    parameters: [{
      name: 'Idempotency-Key',
      in: 'header',
      required: false,
      description: 'at most 255 visible ASCII characters; makes retrying the request safe for 24 hours',
      schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,255}$' },
    }],
    responses: {
      202: taskCreated('the task, stored and queued; Location is its URL'),
      200: json('a replay: the task the same Idempotency-Key and body created', ref('Task'), {
        'Idempotent-Replayed': { schema: { type: 'string', enum: ['true'] } },
      }),
      ...problems([
        [400, 'the body is not valid JSON or holds values that cannot be stored, or the Idempotency-Key header is invalid'],
        401,
        [409, 'this Idempotency-Key was used in the last 24 hours for a different request'],
        413, 415, 422, 503,
      ]),
    },
  },
  'POST /v1/tasks/batch': {
    operationId: 'createTaskBatch',
    tags: ['tasks'],
    summary: 'Submit up to 1000 tasks at once',
    description: 'Each entry is a task submission as for POST /v1/tasks. All the tasks are stored in one statement, or none: one invalid entry is a 422 naming it (`/tasks/3/payload/seconds`).',
    responses: {
      202: json('the tasks, in the order sent', ref('TaskBatch')),
      ...problems([[400, 'the body is not valid JSON or holds values that cannot be stored'], 401, 413, 415, 422, 503]),
    },
  },
  'GET /v1/tasks': {
    operationId: 'listTasks',
    tags: ['tasks'],
    summary: 'List tasks',
    description: 'The tenant\'s tasks, newest first, a page at a time (keyset pagination): pass `nextCursor` as `cursor` for the next page.',
    parameters: [
      { name: 'status', in: 'query', description: `only these statuses: comma-separated, or the parameter repeated (${['queued', 'running', 'succeeded', 'failed', 'canceled'].join(', ')})` },
      { name: 'type', in: 'query', description: `only this task type (${taskTypes.join(', ')})` },
      { name: 'queue', in: 'query', description: 'only this queue' },
      { name: 'limit', in: 'query', description: `page size, 1..100 (default ${defaultPageSize})` },
      { name: 'cursor', in: 'query', description: 'nextCursor of the previous page' },
    ],
    responses: {
      200: json('a page of tasks', ref('TaskList')),
      ...problems([[400, 'a query parameter is invalid; `errors` names it'], 401, 503]),
    },
  },
  'GET /v1/tasks/{id}': {
    operationId: 'getTask',
    tags: ['tasks'],
    summary: 'Get a task',
    parameters: [taskId],
    responses: { 200: json('the task', ref('Task')), ...problems([401, 404, 503]) },
  },
  'POST /v1/tasks/{id}/cancel': {
    operationId: 'cancelTask',
    tags: ['tasks'],
    summary: 'Cancel a task',
    description: 'A queued task is canceled at once. A running task gets `cancelRequested: true`: its handler\'s AbortSignal fires within a second and the task ends `canceled`. A finished task cannot be canceled (409).',
    parameters: [taskId],
    responses: {
      202: taskCreated('the task, canceled or with cancelRequested'),
      ...problems([401, 404, [409, 'the task has already finished'], 503]),
    },
  },
  'POST /v1/tasks/{id}/retry': {
    operationId: 'retryTask',
    tags: ['tasks'],
    summary: 'Retry a failed or canceled task',
    description: 'Queues a `failed` or `canceled` task again with a fresh attempt budget. Any other status is 409.',
    parameters: [taskId],
    responses: {
      202: taskCreated('the task, queued again'),
      ...problems([401, 404, [409, 'only a failed or canceled task can be retried'], 503]),
    },
  },
  'GET /v1/tasks/{id}/events': {
    operationId: 'streamTaskEvents',
    tags: ['streams'],
    summary: 'Follow one task\'s events (SSE)',
    description: 'A Server-Sent Events stream: `retry: 2000`, then the task\'s stored events, then live ones, each persisted before it is sent. `id` is the task\'s own event sequence (1, 2, 3…); `event` is `status` (every status change, with `attempt`, and `error`, `result` or `retryAt` where they apply) or `progress` (`percent` 0..100 and/or `message`). The server ends the stream after the terminal status event. A `: ping` comment every 15 s keeps proxies from closing an idle stream. Authenticate with the API key, or (for a browser EventSource, which cannot send headers) with the `token` of `links.events`.',
    parameters: [
      taskId,
      streamTokenQuery('a stream token for this task (links.events carries one) or for the tenant; not needed with an Authorization header'),
      lastEventIdHeader('resume: replay only the events after this one. A finished task resumed past its last event answers 204'),
      { ...lastEventIdHeader('as Last-Event-ID, for a new EventSource, which cannot send headers'), name: 'lastEventId', in: 'query' },
    ],
    ...streamAuth,
    responses: {
      200: eventStream('the event stream; it ends after the terminal status event'),
      204: { description: 'the task has finished and there is nothing after Last-Event-ID: stop reconnecting' },
      ...problems([[400, 'Last-Event-ID (or lastEventId) is not a whole number'], 401, 404, 503]),
    },
  },
  'POST /v1/stream-tokens': {
    operationId: 'createStreamToken',
    tags: ['streams'],
    summary: 'Create a stream token',
    description: 'A signed, read-only token for one task\'s stream (with `taskId`) or for the tenant stream (without), valid for one hour. Pass it as `?token=` where a client cannot send an Authorization header, e.g. a browser EventSource. The body may be omitted.',
    responses: {
      201: json('the token', ref('StreamToken')),
      ...problems([[400, 'the body is not valid JSON'], 401, [404, 'no such task for this tenant'], 413, 415, 422, 503]),
    },
  },
  'GET /v1/events': {
    operationId: 'streamTenantEvents',
    tags: ['streams'],
    summary: 'Follow every event of the tenant\'s tasks (SSE)',
    description: 'A Server-Sent Events stream of the events of all the tenant\'s tasks, optionally of one type and one queue, for dashboards. `id` is a global, increasing event id; `data` also carries the task\'s `type` and `queue`. Starts with events from now on; resumable by `Last-Event-ID` (or the `lastEventId` query parameter, for a new EventSource) with no event skipped or sent twice. A task stream token is refused (403): use a tenant token.',
    parameters: [
      { name: 'type', in: 'query', description: 'only events of tasks of this type' },
      { name: 'queue', in: 'query', description: 'only events of tasks in this queue' },
      { name: 'token', in: 'query', description: 'a tenant stream token (POST /v1/stream-tokens without taskId); not needed with an Authorization header' },
      { name: 'lastEventId', in: 'query', description: 'as Last-Event-ID, for a new EventSource, which cannot send headers' },
      lastEventIdHeader('resume: send only the events after this global event id'),
    ],
    ...streamAuth,
    responses: {
      200: eventStream('the event stream; it stays open'),
      ...problems([[400, 'a query parameter or Last-Event-ID is invalid'], 401, [403, 'a task stream token opens only that task\'s stream'], 503]),
    },
  },
  'GET /healthz': {
    operationId: 'health',
    tags: ['operations'],
    summary: 'Liveness',
    description: '200 while the process runs.',
    ...publicRoute,
    responses: { 200: json('the process runs', ref('Health')), ...problems([]) },
  },
  'GET /readyz': {
    operationId: 'ready',
    tags: ['operations'],
    summary: 'Readiness',
    description: '200 when the database answers, its migrations are current and the LISTEN connection for live events is up; else 503.',
    ...publicRoute,
    responses: {
      200: json('ready to serve', ref('Ready')),
      ...problems([[503, 'not ready: the database does not answer, its schema is behind (run bun run migrate), or LISTEN is not up yet']]),
    },
  },
  'GET /metrics': {
    operationId: 'metrics',
    tags: ['operations'],
    summary: 'Prometheus metrics',
    description: 'Tasks submitted and completed, queue depth, enqueue-to-start and run durations, open SSE streams, LISTEN connection health, in the Prometheus text exposition format.',
    ...publicRoute,
    responses: {
      200: { description: 'the metrics', content: { 'text/plain; version=0.0.4': { schema: { type: 'string' } } } },
      ...problems([]),
    },
  },
} satisfies Record<`${'GET' | 'POST'} /${string}`, Described>

// ---- The document -------------------------------------------------------------------------------

const sameParameter = (a: Parameter, b: Parameter) => a.in === b.in && a.name.toLowerCase() === b.name.toLowerCase()

/**
 * A parameter derived from a route schema keeps its schema and gains the described one's words;
 * described parameters that no schema declares (headers and query parameters a handler reads
 * itself) are added.
 */
function mergeParameters(derived: Parameter[], described: Parameter[]): Parameter[] {
  const words = (parameter: Parameter) => described.find((d) => sameParameter(d, parameter))?.description
  return [
    ...derived.map((parameter) => ({ ...parameter, description: words(parameter) ?? parameter.description })),
    ...described
      .filter((d) => !derived.some((parameter) => sameParameter(d, parameter)))
      .map((d) => ({ required: false, schema: { type: 'string' }, ...d })),
  ]
}

/** "/v1/tasks/:id/" as the document writes it: "/v1/tasks/{id}". */
const documentPath = (path: string) => {
  const templated = path.replace(/:([^/]+)/g, '{$1}')
  return templated.length > 1 ? templated.replace(/\/$/, '') : templated
}

interface Route { method: string; path: string; hooks: { body?: unknown } }

/** A body schema that accepts an empty body (onParse makes it null) is optional. */
function acceptsNoBody(schema: unknown) {
  const standard = (schema as { '~standard'?: { validate(value: unknown): unknown } })['~standard']
  const result = standard?.validate(null) as { issues?: unknown } | undefined
  return result !== undefined && !(result instanceof Promise) && result.issues === undefined
}

/**
 * Completes what the plugin derived from the routes (paths, path and query parameters) with
 * `operations`, and with each route's body schema as an application/json request body: every
 * route shares the one JSON body parser (onParse in app.ts), which the plugin cannot read a
 * content type from, so it leaves request bodies without content.
 */
function complete(document: Document, routes: readonly Route[]): Document {
  const paths: Document['paths'] = {}
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, derived] of Object.entries(item)) {
      const key = `${method.toUpperCase()} ${documentPath(path)}`
      const described = (operations as Record<string, Described | undefined>)[key]
      const body = routes.find((route) => `${route.method} ${documentPath(route.path)}` === key)?.hooks.body
      const { parameters: _, requestBody: __, ...operation }: Operation = { ...derived, ...described }
      const parameters = mergeParameters(derived.parameters ?? [], described?.parameters ?? [])
      ;(paths[documentPath(path)] ??= {})[method] = {
        ...operation,
        ...(parameters.length ? { parameters } : {}),
        ...(body ? { requestBody: { required: !acceptsNoBody(body), content: { 'application/json': { schema: requestJsonSchema(body) } } } } : {}),
      }
    }
  }
  return { ...document, paths }
}

/** Everything but the public API: the dashboard, its assets, the docs themselves. */
const internalPaths = /^(?!\/(v1\/|healthz$|readyz$|metrics$))/

export function apiDocs() {
  const spec = openapi({
    specPath: '/openapi.json',
    provider: null, // GET /docs below renders the document without loading anything from a CDN
    mapJsonSchema: { valibot: requestJsonSchema },
    exclude: { paths: [internalPaths] },
    documentation: {
      info: {
        title: 'Taskcast',
        version: '0.1.0',
        description: 'Long-running tasks behind a fast REST API: submit a task, get its id at once, watch its progress live over Server-Sent Events. Errors are RFC 9457 application/problem+json. Every route but /healthz, /readyz, /metrics and the docs needs `Authorization: Bearer KEY`; a key belongs to one tenant, which sees only its own tasks.',
      },
      tags: [
        { name: 'tasks', description: 'Submit, inspect, list, cancel and retry tasks' },
        { name: 'streams', description: 'Live events over Server-Sent Events, and the tokens that open them' },
        { name: 'operations', description: 'Health, readiness and metrics; no API key needed' },
      ],
      security: [{ bearer: [] }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'an API key: bun run keys create --tenant NAME' },
          streamToken: {
            type: 'apiKey',
            in: 'query',
            name: 'token',
            description: 'a signed, read-only stream token: links.events carries one; POST /v1/stream-tokens makes them',
          },
        },
        // JSON Schema (2020-12) from valibot; the plugin's types expect OpenAPI 3.0 schema objects.
        schemas: componentSchemas as Record<string, object>,
      },
    },
  })
  // The plugin reads the app's routes this way too; Elysia's types mark the method protected.
  const routes = () => (spec as unknown as { getGlobalRoutes(): Route[] }).getGlobalRoutes()
  let completed: { from: unknown; document: Document } | undefined
  const docsPage = Bun.file(new URL('./docs.html', import.meta.url))
  return new Elysia({ name: 'taskcast-api-docs' })
    .get('/docs', () => new Response(docsPage, { headers: { 'content-type': 'text/html; charset=utf-8' } }), {
      detail: { hide: true },
    })
    // Applies to the plugin's one route, GET /openapi.json (whose answer the plugin caches).
    .onAfterHandle(({ response }) => {
      const document = completed && completed.from === response ? completed.document : complete(response as Document, routes())
      completed = { from: response, document }
      return document
    })
    .use(spec)
}
