import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { taskTypes } from '../db/catalogue.ts'
import { newTenant, startApp, uniqueName } from './support/fixtures.ts'

let api: Awaited<ReturnType<typeof startApp>>
let spec: any

beforeAll(async () => {
  api = await startApp()
  const response = await api.request('/openapi.json')
  expect(response.status).toBe(200)
  spec = await response.json()
})
afterAll(() => api.stop())

const publicRoutes = [
  'POST /v1/tasks',
  'POST /v1/tasks/batch',
  'GET /v1/tasks',
  'GET /v1/tasks/{id}',
  'POST /v1/tasks/{id}/cancel',
  'POST /v1/tasks/{id}/retry',
  'GET /v1/tasks/{id}/events',
  'POST /v1/stream-tokens',
  'GET /v1/events',
  'GET /healthz',
  'GET /readyz',
  'GET /metrics',
]
const unauthenticated = ['GET /healthz', 'GET /readyz', 'GET /metrics']
const streams = ['GET /v1/tasks/{id}/events', 'GET /v1/events']

const operations = () => Object.entries(spec.paths as Record<string, Record<string, any>>)
  .flatMap(([path, item]) => Object.entries(item).map(([method, operation]) => ({ route: `${method.toUpperCase()} ${path}`, operation })))
const operation = (route: string) => {
  const [method, path] = route.split(' ') as [string, string]
  return spec.paths[path]?.[method.toLowerCase()]
}
const parameter = (route: string, location: string, name: string) =>
  operation(route).parameters?.find((p: any) => p.in === location && p.name.toLowerCase() === name.toLowerCase())

/** The subset of JSON Schema the document uses; returns what does not match, empty when it does. */
function mismatches(schema: any, value: unknown, at = ''): string[] {
  if (schema.$ref) return mismatches(spec.components.schemas[schema.$ref.split('/').pop()], value, at)
  const alternatives = schema.anyOf ?? schema.oneOf
  if (alternatives) {
    return alternatives.some((alternative: any) => mismatches(alternative, value, at).length === 0) ? [] : [`${at}: matches no alternative`]
  }
  if (schema.const !== undefined && value !== schema.const) return [`${at}: is not ${JSON.stringify(schema.const)}`]
  if (schema.enum && !schema.enum.includes(value)) return [`${at}: is not one of ${schema.enum.join(', ')}`]
  const type = value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value
  const expected = schema.type
  if (expected && !(expected === type || (expected === 'integer' && Number.isInteger(value)))) return [`${at}: is ${type}, not ${expected}`]
  if (type === 'array' && schema.items) return (value as unknown[]).flatMap((item, i) => mismatches(schema.items, item, `${at}/${i}`))
  if (type !== 'object' || !schema.properties) return []
  const object = value as Record<string, unknown>
  return [
    ...(schema.required ?? []).filter((key: string) => !(key in object)).map((key: string) => `${at}/${key}: is missing`),
    ...Object.entries(object).flatMap(([key, child]) => schema.properties[key]
      ? mismatches(schema.properties[key], child, `${at}/${key}`)
      : schema.additionalProperties === false ? [`${at}/${key}: is not allowed`] : []),
  ]
}

describe('GET /openapi.json', () => {
  test('is an OpenAPI 3 document describing every public route, and nothing internal', () => {
    expect(spec.openapi).toMatch(/^3\./)
    expect(spec.info).toMatchObject({ title: 'Taskcast', version: expect.any(String) })
    expect(operations().map(({ route }) => route).sort()).toEqual([...publicRoutes].sort())
  })

  test('gives every route a summary, a tag and its own operationId', () => {
    for (const { route, operation } of operations()) {
      expect({ route, summary: operation.summary, tags: operation.tags?.length }).toEqual({ route, summary: expect.any(String), tags: 1 })
    }
    const ids = operations().map(({ operation }) => operation.operationId)
    expect(new Set(ids).size).toBe(publicRoutes.length)
  })

  test('documents the error answers of every route as problem+json with the one Problem schema', () => {
    expect(spec.components.schemas.Problem).toMatchObject({
      type: 'object',
      required: ['type', 'title', 'status'],
      properties: {
        type: { type: 'string' }, title: { type: 'string' }, status: { type: 'integer' }, detail: { type: 'string' }, instance: { type: 'string' },
        errors: { type: 'array', items: { type: 'object', required: ['path', 'message'] } },
      },
    })
    for (const { route, operation } of operations()) {
      const errors = Object.entries(operation.responses).filter(([status]) => Number(status) >= 400)
      expect({ route, errors: errors.length > 0 }).toEqual({ route, errors: true })
      for (const [status, response] of errors as Array<[string, any]>) {
        expect({ route, status, content: response.content }).toEqual({
          route, status, content: { 'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } } },
        })
      }
    }
    const statuses = (route: string) => Object.keys(operation(route).responses).map(Number).filter((status) => status >= 400)
    expect(statuses('POST /v1/tasks')).toEqual(expect.arrayContaining([400, 401, 409, 413, 415, 422, 503]))
    expect(statuses('POST /v1/tasks/batch')).toEqual(expect.arrayContaining([401, 413, 415, 422, 503]))
    expect(statuses('GET /v1/tasks')).toEqual(expect.arrayContaining([400, 401, 503]))
    expect(statuses('GET /v1/tasks/{id}')).toEqual(expect.arrayContaining([401, 404]))
    expect(statuses('POST /v1/tasks/{id}/cancel')).toEqual(expect.arrayContaining([401, 404, 409]))
    expect(statuses('POST /v1/tasks/{id}/retry')).toEqual(expect.arrayContaining([401, 404, 409]))
    expect(statuses('GET /v1/tasks/{id}/events')).toEqual(expect.arrayContaining([400, 401, 404]))
    expect(statuses('POST /v1/stream-tokens')).toEqual(expect.arrayContaining([401, 404, 422]))
    expect(statuses('GET /v1/events')).toEqual(expect.arrayContaining([400, 401, 403]))
    expect(statuses('GET /readyz')).toContain(503)
  })

  test('describes the success answers with their schemas', () => {
    const schemaOf = (route: string, status: number) => operation(route).responses[status].content['application/json'].schema
    expect(schemaOf('POST /v1/tasks', 202)).toEqual({ $ref: '#/components/schemas/Task' })
    expect(schemaOf('GET /v1/tasks/{id}', 200)).toEqual({ $ref: '#/components/schemas/Task' })
    expect(schemaOf('POST /v1/tasks/batch', 202)).toEqual({ $ref: '#/components/schemas/TaskBatch' })
    expect(schemaOf('GET /v1/tasks', 200)).toEqual({ $ref: '#/components/schemas/TaskList' })
    expect(schemaOf('POST /v1/stream-tokens', 201)).toEqual({ $ref: '#/components/schemas/StreamToken' })
    expect(spec.components.schemas.TaskList.properties).toMatchObject({ items: { items: { $ref: '#/components/schemas/Task' } } })
    expect(spec.components.schemas.Task.properties.status.enum).toEqual(['queued', 'running', 'succeeded', 'failed', 'canceled'])
    for (const route of streams) expect(Object.keys(operation(route).responses[200].content)).toEqual(['text/event-stream'])
  })

  test('takes the POST /v1/tasks body from the catalogue, one variant per task type', () => {
    const body = operation('POST /v1/tasks').requestBody
    expect(body.required).toBe(true)
    expect(Object.keys(body.content)).toEqual(['application/json'])
    const variants = body.content['application/json'].schema.oneOf
    expect(variants.map((variant: any) => variant.properties.type.const)).toEqual(taskTypes)
    expect(taskTypes).toEqual(expect.arrayContaining(['demo.sleep', 'demo.primes', 'http.request']))
    const sleep = variants.find((variant: any) => variant.properties.type.const === 'demo.sleep')
    expect(sleep.properties.payload).toMatchObject({ required: ['seconds'], properties: { seconds: { type: 'number', maximum: 3600 } } })
    expect(sleep.properties.priority).toMatchObject({ type: 'integer', minimum: -100, maximum: 100 })
    expect(operation('POST /v1/tasks/batch').requestBody.content['application/json'].schema.properties.tasks.items.oneOf)
      .toHaveLength(taskTypes.length)
    expect(operation('POST /v1/stream-tokens').requestBody.required).toBe(false)
    expect(parameter('POST /v1/tasks', 'header', 'Idempotency-Key')).toMatchObject({ required: false, schema: { type: 'string' } })
  })

  test('takes query parameters from the route schemas, and adds the headers and tokens handlers read', () => {
    expect(operation('GET /v1/tasks').parameters.map((p: any) => `${p.in} ${p.name}`))
      .toEqual(['query status', 'query type', 'query queue', 'query limit', 'query cursor'])
    expect(parameter('GET /v1/tasks', 'query', 'limit')).toMatchObject({ required: false, schema: { type: 'string', pattern: '^\\d+$' } })
    for (const name of ['type', 'queue', 'token', 'lastEventId']) expect(parameter('GET /v1/events', 'query', name)).toBeDefined()
    for (const route of streams) {
      expect(parameter(route, 'query', 'token')).toBeDefined()
      expect(parameter(route, 'header', 'Last-Event-ID')).toBeDefined()
      expect(parameter(route, 'query', 'lastEventId')).toBeDefined()
    }
    expect(parameter('GET /v1/tasks/{id}', 'path', 'id')).toMatchObject({ required: true })
  })

  test('asks for the API key on every route but health and metrics; streams also take a stream token', () => {
    expect(spec.components.securitySchemes).toMatchObject({
      bearer: { type: 'http', scheme: 'bearer' },
      streamToken: { type: 'apiKey', in: 'query', name: 'token' },
    })
    expect(spec.security).toEqual([{ bearer: [] }])
    for (const { route, operation } of operations()) {
      const security = operation.security ?? spec.security
      const expected = unauthenticated.includes(route) ? [] : streams.includes(route) ? [{ bearer: [] }, { streamToken: [] }] : [{ bearer: [] }]
      expect({ route, security }).toEqual({ route, security: expected })
    }
  })

  test('a real 422 answer has the documented Problem shape', async () => {
    const tenant = await newTenant()
    const response = await api.request('/v1/tasks', {
      method: 'POST', headers: tenant.auth, json: { type: 'demo.sleep', payload: { seconds: 'soon' } },
    })
    expect(response.status).toBe(422)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    const problem = await response.json() as any
    expect(problem.errors).toContainEqual({ path: '/payload/seconds', message: expect.any(String) })
    expect(mismatches({ $ref: '#/components/schemas/Problem' }, problem)).toEqual([])
    expect(mismatches({ $ref: '#/components/schemas/Problem' }, { ...problem, status: '422' })).not.toEqual([])
  })

  test('real tasks and pages have the documented shapes', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const created = await api.request('/v1/tasks', {
      method: 'POST', headers: tenant.auth, json: { type: 'demo.sleep', payload: { seconds: 1 }, queue },
    })
    expect(mismatches({ $ref: '#/components/schemas/Task' }, await created.json())).toEqual([])
    const page = await api.request(`/v1/tasks?queue=${queue}`, { headers: tenant.auth })
    expect(mismatches({ $ref: '#/components/schemas/TaskList' }, await page.json())).toEqual([])
    const token = await api.request('/v1/stream-tokens', { method: 'POST', headers: tenant.auth })
    expect(mismatches({ $ref: '#/components/schemas/StreamToken' }, await token.json())).toEqual([])
  })

  test('is served at /openapi.json only: the plugin\'s default path is an unknown route, answered as a problem', async () => {
    const response = await api.request('/openapi/json')
    expect(response.status).toBe(404)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
  })
})

describe('GET /docs', () => {
  test('is an HTML page that renders the document and loads nothing from elsewhere', async () => {
    const response = await api.request('/docs')
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toStartWith('text/html')
    const html = await response.text()
    expect(html).toContain("fetch('/openapi.json')")
    expect(html).toContain('href="/openapi.json"')
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//)
  })
})
