import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import { testDb } from './support/database.ts'
import { newTenant, startApp } from './support/fixtures.ts'

/**
 * Thousands of random mutations of valid requests: every answer is below 500, every refusal is
 * problem+json, and a refused request stores nothing (the tenant ends with exactly as many tasks
 * as were accepted).
 */
let api: Awaited<ReturnType<typeof startApp>>
let tenant: Awaited<ReturnType<typeof newTenant>>
let accepted = 0

beforeAll(async () => {
  api = await startApp({ maxPayloadBytes: 16_384 })
  tenant = await newTenant()
})
afterAll(() => api.stop())

const validBodies: Record<string, unknown>[] = [
  { type: 'demo.sleep', payload: { seconds: 1 } },
  { type: 'demo.sleep', payload: { seconds: 0.5, steps: 3, failTimes: 1 }, queue: 'fuzz', priority: 5 },
  { type: 'demo.primes', payload: { limit: 1000 }, runAt: '2030-01-01T00:00:00Z', maxAttempts: 2, timeoutSeconds: 60 },
  { type: 'http.request', payload: { url: 'http://127.0.0.1:9/hook', method: 'PUT', headers: { 'x-a': 'b' }, body: { n: 1 } } },
]
const fields = ['type', 'payload', 'queue', 'priority', 'runAt', 'maxAttempts', 'timeoutSeconds', 'unknownField']
const payloadFields = ['seconds', 'steps', 'failTimes', 'limit', 'url', 'method', 'headers', 'body', 'extra']

const nested = (depth: number): unknown => (depth === 0 ? 'bottom' : { a: [nested(depth - 1)] })

const nasty = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom('\u0000', 'a\u0000b', '\ud800', 'x\udfffy', '', ' ', '%00', "' or 1=1 --", 'demo.sleep', 'DEFAULT'),
  fc.double(),
  fc.integer(),
  fc.constantFrom(1e308, -1e308, 2 ** 53 + 1, -0, 0.1, 3601, -101, 101, 1e9),
  fc.integer({ min: 60, max: 120 }).map(nested),
  fc.constantFrom(null, true, [], {}),
)

const mutation = fc.oneof(
  fc.record({ op: fc.constant('set' as const), field: fc.constantFrom(...fields), value: nasty }),
  fc.record({ op: fc.constant('setPayload' as const), field: fc.constantFrom(...payloadFields), value: nasty }),
  fc.record({ op: fc.constant('delete' as const), field: fc.constantFrom(...fields) }),
  fc.record({ op: fc.constant('replace' as const), value: nasty }),
)

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never

function mutate(base: Record<string, unknown>, mutations: Mutation[]): unknown {
  let body: any = structuredClone(base)
  for (const mutation of mutations) {
    // Generated values can be shared instances (constantFrom): never edit them in place.
    const m = structuredClone(mutation)
    if (m.op === 'replace') body = m.value
    else if (typeof body !== 'object' || body === null || Array.isArray(body)) continue
    else if (m.op === 'set') body[m.field] = m.value
    else if (m.op === 'delete') delete body[m.field]
    else if (m.op === 'setPayload') body.payload = { ...(typeof body.payload === 'object' ? body.payload : {}), [m.field]: m.value }
  }
  return body
}

async function check(response: Response, tasksIfAccepted: (body: any) => number) {
  expect(response.status).toBeLessThan(500)
  if (response.status >= 400) {
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    expect((await response.json() as any).status).toBe(response.status)
  } else if (response.status === 202) {
    accepted += tasksIfAccepted(await response.json())
  } else {
    await response.body?.cancel()
  }
}

const post = (path: string, body: BodyInit, contentType = 'application/json') =>
  api.request(path, { method: 'POST', headers: { ...tenant.auth, 'content-type': contentType }, body })

describe('random mutations of valid requests', () => {
  test('POST /v1/tasks', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...validBodies), fc.array(mutation, { minLength: 1, maxLength: 3 }), async (base, mutations) => {
      await check(await post('/v1/tasks', JSON.stringify(mutate(base, mutations))), () => 1)
    }), { numRuns: 2000 })
  }, 120_000)

  test('POST /v1/tasks/batch', async () => {
    await fc.assert(fc.asyncProperty(
      fc.array(fc.tuple(fc.constantFrom(...validBodies), fc.array(mutation, { maxLength: 2 })), { maxLength: 5 }),
      async (items) => {
        const tasks = items.map(([base, mutations]) => mutate(base, mutations))
        await check(await post('/v1/tasks/batch', JSON.stringify({ tasks })), (body) => body.items.length)
      }), { numRuns: 400 })
  }, 120_000)

  test('raw bytes: corrupted, truncated or mislabelled bodies', async () => {
    const contentTypes = ['application/json', 'application/json; charset=utf-8', 'text/plain', '', 'application/x-www-form-urlencoded', 'application/problem+json']
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...validBodies),
      fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
      fc.option(fc.nat()),
      fc.constantFrom(...contentTypes),
      async (base, edits, cut, contentType) => {
        let bytes = new TextEncoder().encode(JSON.stringify(base))
        for (const { at, byte } of edits) bytes[at % bytes.length] = byte
        if (cut !== null) bytes = bytes.slice(0, cut % (bytes.length + 1))
        await check(await post('/v1/tasks', bytes, contentType), () => 1)
      }), { numRuns: 800 })
  }, 120_000)

  test('query strings, ids, Last-Event-ID and Idempotency-Key', async () => {
    const text = fc.oneof(fc.string({ unit: 'binary', maxLength: 20 }), fc.constantFrom('\u0000', '%00', '%ZZ', '-1', '101', '1e3', 'queued,bogus'))
    await fc.assert(fc.asyncProperty(
      fc.constantFrom('status', 'type', 'queue', 'limit', 'cursor'), text, text, text,
      async (param, value, id, header) => {
        const list = await api.request(`/v1/tasks?${param}=${encodeURIComponent(value)}`, { headers: tenant.auth })
        await check(list, () => 0)
        const one = await api.request(`/v1/tasks/${encodeURIComponent(id)}`, { headers: tenant.auth })
        await check(one, () => 0)
        const events = await api.request(`/v1/tasks/${encodeURIComponent(id)}/events`, { headers: { ...tenant.auth, 'last-event-id': header.replace(/[^\x20-\x7e]/g, '') } })
        await check(events, () => 0)
        const keyed = await api.request('/v1/tasks', {
          method: 'POST',
          headers: { ...tenant.auth, 'idempotency-key': header.replace(/[^\x20-\x7e]/g, '') },
          json: validBodies[0],
        })
        await check(keyed, () => 1)
      }), { numRuns: 300 })
  }, 120_000)

  test('accepted exactly as many tasks as were stored', async () => {
    const [row] = await testDb().sql`select count(*)::int as n from taskcast.tasks where tenant_id = ${tenant.id}`
    expect(row!.n).toBe(accepted)
    expect(accepted).toBeGreaterThan(0)
  })
})
