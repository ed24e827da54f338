import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { taskEventsAfter } from '../db/task-events.ts'
import { taskClaim } from '../db/task-leases.ts'
import { testDb } from './support/database.ts'
import { newTenant, startApp, uniqueName } from './support/fixtures.ts'

let api: Awaited<ReturnType<typeof startApp>>
let acme: Awaited<ReturnType<typeof newTenant>>
let other: Awaited<ReturnType<typeof newTenant>>

beforeAll(async () => {
  api = await startApp({ maxPayloadBytes: 4096 })
  acme = await newTenant()
  other = await newTenant()
})
afterAll(() => api.stop())

const sleepTask = (extra: Record<string, unknown> = {}) =>
  ({ type: 'demo.sleep', payload: { seconds: 1 }, queue: uniqueName('q'), ...extra })

async function submit(tenant = acme, body: unknown = sleepTask()) {
  const response = await api.request('/v1/tasks', { method: 'POST', headers: tenant.auth, json: body })
  return { response, body: await response.json() as any }
}

const countTasks = async (tenantId: string) =>
  Number((await testDb().sql`select count(*)::int as n from taskcast.tasks where tenant_id = ${tenantId}`)[0]!.n)

/** Checks a problem+json answer; takes a response, or a submit() result whose body was read. */
async function expectProblem(answer: Response | { response: Response; body: any }, status: number) {
  const response = answer instanceof Response ? answer : answer.response
  expect(response.status).toBe(status)
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  const problem = answer instanceof Response ? await response.json() as any : answer.body
  expect(problem).toMatchObject({ type: expect.any(String), title: expect.any(String), status })
  return problem
}

describe('POST /v1/tasks', () => {
  test('accepts a task with 202, Location and the task resource, and stores it with its queued event', async () => {
    const { response, body } = await submit()
    expect(response.status).toBe(202)
    expect(response.headers.get('location')).toBe(`/v1/tasks/${body.id}`)
    expect(body).toMatchObject({
      type: 'demo.sleep', status: 'queued', priority: 0, payload: { seconds: 1, steps: 10, failTimes: 0 },
      result: null, error: null, progress: null, attempt: 0, maxAttempts: 3, timeoutSeconds: 3700,
      startedAt: null, finishedAt: null, cancelRequested: false, traceId: expect.stringMatching(/^[0-9a-f]{32}$/),
      links: { self: `/v1/tasks/${body.id}`, cancel: `/v1/tasks/${body.id}/cancel` },
    })
    expect(body.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(body.links.events).toStartWith(`/v1/tasks/${body.id}/events?token=`)
    expect(new Date(body.createdAt).toISOString()).toBe(body.createdAt)
    const events = await taskEventsAfter(testDb().sql, body.id, 0)
    expect(events.map((event) => event.data)).toEqual([{ status: 'queued', attempt: 0 }])
    const read = await (await api.request(`/v1/tasks/${body.id}`, { headers: acme.auth })).json() as any
    expect({ ...read, links: null }).toEqual({ ...body, links: null }) // the answer is the task as stored
  })

  test('takes queue, priority, runAt, maxAttempts and timeoutSeconds from the request', async () => {
    const runAt = new Date(Date.now() + 60_000).toISOString()
    const { response, body } = await submit(acme, {
      type: 'demo.primes', payload: { limit: 1000 }, queue: 'reports', priority: -7, runAt, maxAttempts: 9, timeoutSeconds: 42,
    })
    expect(response.status).toBe(202)
    expect(body).toMatchObject({ queue: 'reports', priority: -7, runAt, maxAttempts: 9, timeoutSeconds: 42 })
    const read = await (await api.request(`/v1/tasks/${body.id}`, { headers: acme.auth })).json() as any
    expect({ ...read, links: null }).toEqual({ ...body, links: null })
  })

  test('rejects an unknown type and a bad payload with 422 and field errors, storing nothing', async () => {
    const tenant = await newTenant()
    const unknown = await expectProblem(await submit(tenant, { type: 'demo.nope' }), 422)
    expect(unknown.errors).toEqual([{ path: '/type', message: expect.stringContaining('unknown task type') }])

    const badPayload = await expectProblem(await submit(tenant, { type: 'demo.sleep', payload: { seconds: 'soon', steps: 0 } }), 422)
    expect(badPayload.errors.map((error: any) => error.path).sort()).toEqual(['/payload/seconds', '/payload/steps'])

    for (const body of [
      { type: 'demo.sleep', payload: { seconds: 3601 } },
      { type: 'demo.sleep', payload: { seconds: 1 }, priority: 101 },
      { type: 'demo.sleep', payload: { seconds: 1 }, priority: 1.5 },
      { type: 'demo.sleep', payload: { seconds: 1 }, queue: 'Has Spaces' },
      { type: 'demo.sleep', payload: { seconds: 1 }, runAt: 'tomorrow' },
      { type: 'demo.sleep', payload: { seconds: 1 }, maxAttempts: 0 },
      { type: 'demo.sleep', payload: { seconds: 1 }, surprise: true },
      { type: 'demo.sleep', payload: { seconds: 1, extra: 1 } },
      { type: 'demo.sleep', payload: { seconds: 'x\u0000' } },
      [],
      'demo.sleep',
    ]) {
      const problem = await expectProblem(await submit(tenant, body), 422)
      expect(problem.errors.length).toBeGreaterThan(0)
    }
    expect(await countTasks(tenant.id)).toBe(0)
  })

  test('answers malformed JSON with 400, another content type with 415 and an oversized body with 413', async () => {
    const tenant = await newTenant()
    const post = (body: string, contentType: string) =>
      api.request('/v1/tasks', { method: 'POST', headers: { ...tenant.auth, 'content-type': contentType }, body })
    await expectProblem(await post('{"type": "demo.sleep",', 'application/json'), 400)
    await expectProblem(await post('type=demo.sleep', 'application/x-www-form-urlencoded'), 415)
    await expectProblem(await post(JSON.stringify(sleepTask({ payload: { seconds: 1 }, pad: 'x'.repeat(5000) })), 'application/json'), 413)
    await expectProblem(await api.request('/v1/tasks', { method: 'POST', headers: tenant.auth }), 422)
    expect(await countTasks(tenant.id)).toBe(0)
  })

  test('refuses what PostgreSQL cannot store, saying where, and stores escaped text it can', async () => {
    const tenant = await newTenant()
    const post = (path: string, body: string) =>
      api.request(path, { method: 'POST', headers: { ...tenant.auth, 'content-type': 'application/json' }, body })
    const http = (body: string) => `{"type":"http.request","payload":{"url":"http://127.0.0.1:9/hook","body":${body}}}`
    const refused = async (path: string, body: string) => (await expectProblem(await post(path, body), 422)).errors[0]
    const deep = `${'{"a":'.repeat(70)}1${'}'.repeat(70)}`

    expect(await refused('/v1/tasks', http('["ok", "x\\u0000"]'))).toMatchObject({ path: '/payload/body/1', message: expect.stringContaining('NUL') })
    expect(await refused('/v1/tasks', http('{"k\\u0000/~": 1}'))).toMatchObject({ path: '/payload/body/k\u0000~1~0' })
    expect(await refused('/v1/tasks', http('{"s": "\\uD800 alone"}'))).toMatchObject({ path: '/payload/body/s', message: expect.stringContaining('surrogate') })
    expect(await refused('/v1/tasks', http(deep))).toMatchObject({ message: 'nested deeper than 64 levels' })
    expect(await refused('/v1/tasks/batch', `{"tasks":[${http('1')},${http('"\\udfff"')}]}`)).toMatchObject({ path: '/tasks/1/payload/body' })
    expect(await countTasks(tenant.id)).toBe(0)

    // A surrogate pair, escaped, and an escaped backslash before "u0000" are text like any other.
    const stored = await post('/v1/tasks', http('{"s": "\\ud83d\\ude00 \\\\u0000"}'))
    expect(stored.status).toBe(202)
    expect(((await stored.json()) as any).payload.body).toEqual({ s: '😀 \\u0000' })
  })
})

describe('authentication and tenancy', () => {
  test('a missing or unknown key is 401 with WWW-Authenticate', async () => {
    for (const headers of [{}, { authorization: 'Bearer tc_nope' }, { authorization: `Basic ${btoa('a:b')}` }] as Record<string, string>[]) {
      const response = await api.request('/v1/tasks', { headers })
      await expectProblem(response, 401)
      expect(response.headers.get('www-authenticate')).toStartWith('Bearer')
    }
  })

  test("another tenant's task is a 404, exactly as a missing one", async () => {
    const { body: task } = await submit(acme)
    const missing = await expectProblem(await api.request(`/v1/tasks/${Bun.randomUUIDv7()}`, { headers: other.auth }), 404)
    const foreign = await expectProblem(await api.request(`/v1/tasks/${task.id}`, { headers: other.auth }), 404)
    expect(Object.keys(foreign).sort()).toEqual(Object.keys(missing).sort())
    await expectProblem(await api.request(`/v1/tasks/${task.id}/cancel`, { method: 'POST', headers: other.auth }), 404)
    await expectProblem(await api.request(`/v1/tasks/${task.id}/events`, { headers: other.auth }), 404)
    const listed = await (await api.request('/v1/tasks?limit=100', { headers: other.auth })).json() as any
    expect(listed.items.map((item: any) => item.id)).not.toContain(task.id)
    expect((await api.request(`/v1/tasks/${task.id}`, { headers: acme.auth })).status).toBe(200)
  })

  test('a malformed id is a 404', async () => {
    await expectProblem(await api.request('/v1/tasks/not-a-uuid', { headers: acme.auth }), 404)
  })
})

describe('GET /v1/tasks', () => {
  test('pages newest first with a keyset cursor, without repeats or gaps', async () => {
    const tenant = await newTenant()
    const ids: string[] = []
    for (let i = 0; i < 7; i++) ids.push((await submit(tenant)).body.id)
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const query: string = cursor ? `?limit=3&cursor=${cursor}` : '?limit=3'
      const page = await (await api.request(`/v1/tasks${query}`, { headers: tenant.auth })).json() as any
      seen.push(...page.items.map((item: any) => item.id))
      cursor = page.nextCursor
      pages++
    } while (cursor)
    expect(pages).toBe(3)
    expect(seen).toEqual(ids.reverse())
  })

  test('filters by status, type and queue', async () => {
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const { body: a } = await submit(tenant, sleepTask({ queue }))
    const { body: b } = await submit(tenant, { type: 'demo.primes', payload: { limit: 10 }, queue })
    const { body: c } = await submit(tenant, sleepTask())
    await api.request(`/v1/tasks/${c.id}/cancel`, { method: 'POST', headers: tenant.auth })
    const list = async (query: string) =>
      ((await (await api.request(`/v1/tasks?${query}`, { headers: tenant.auth })).json()) as any).items.map((item: any) => item.id)
    expect(await list(`queue=${queue}`)).toEqual([b.id, a.id])
    expect(await list('type=demo.primes')).toEqual([b.id])
    expect(await list('status=canceled')).toEqual([c.id])
    expect(await list('status=queued,canceled')).toEqual([c.id, b.id, a.id])
    expect(await list('status=queued&status=canceled')).toEqual([c.id, b.id, a.id])
    expect(await list(`status=queued&type=demo.sleep&queue=${queue}`)).toEqual([a.id])
  })

  test('rejects a bad limit, status or cursor with 400', async () => {
    for (const query of ['limit=0', 'limit=101', 'limit=ten', 'status=paused', 'cursor=bm90LWEtY3Vyc29y']) {
      const problem = await expectProblem(await api.request(`/v1/tasks?${query}`, { headers: acme.auth }), 400)
      expect(problem.errors[0].path).toStartWith(`/${query.split('=')[0]}`)
    }
  })
})

describe('POST /v1/tasks/:id/cancel', () => {
  test('cancels a queued task at once; a second cancel is 409', async () => {
    const { body: task } = await submit()
    const response = await api.request(`/v1/tasks/${task.id}/cancel`, { method: 'POST', headers: acme.auth })
    expect(response.status).toBe(202)
    const canceled = await response.json() as any
    expect(canceled).toMatchObject({ status: 'canceled', cancelRequested: true, finishedAt: expect.any(String) })
    await expectProblem(await api.request(`/v1/tasks/${task.id}/cancel`, { method: 'POST', headers: acme.auth }), 409)
  })

  test('flags a running task for its worker', async () => {
    const { body: task } = await submit()
    await taskClaim(testDb().sql, { workerId: 'w', queues: [task.queue], limit: 1, leaseSeconds: 30 })
    const response = await api.request(`/v1/tasks/${task.id}/cancel`, { method: 'POST', headers: acme.auth })
    expect(response.status).toBe(202)
    expect(await response.json()).toMatchObject({ status: 'running', cancelRequested: true })
  })
})

describe('POST /v1/stream-tokens', () => {
  test('signs a read-only token for one task, which opens only that stream without a key', async () => {
    const [{ body: mine }, { body: sibling }] = [await submit(), await submit()]
    await api.request(`/v1/tasks/${mine.id}/cancel`, { method: 'POST', headers: acme.auth })
    const response = await api.request('/v1/stream-tokens', { method: 'POST', headers: acme.auth, json: { taskId: mine.id } })
    expect(response.status).toBe(201)
    const { token, expiresAt } = await response.json() as any
    expect(new Date(expiresAt).getTime() - Date.now()).toBeGreaterThan(3_500_000)
    const stream = await api.request(`/v1/tasks/${mine.id}/events?token=${token}`)
    expect(stream.status).toBe(200)
    expect(stream.headers.get('content-type')).toStartWith('text/event-stream')
    await stream.body?.cancel()
    await expectProblem(await api.request(`/v1/tasks/${sibling.id}/events?token=${token}`), 404)
    await expectProblem(await api.request(`/v1/tasks/${mine.id}/events?token=${token.slice(0, -2)}xx`), 401)
    await expectProblem(await api.request(`/v1/tasks?token=${token}`), 401)
  })

  test('signs a tenant token when no task is named; a foreign task is 404', async () => {
    const { body: task } = await submit()
    await api.request(`/v1/tasks/${task.id}/cancel`, { method: 'POST', headers: acme.auth })
    const tenantToken = await (await api.request('/v1/stream-tokens', { method: 'POST', headers: acme.auth })).json() as any
    const stream = await api.request(`/v1/tasks/${task.id}/events?token=${tenantToken.token}`)
    expect(stream.status).toBe(200)
    await stream.body?.cancel()
    await expectProblem(await api.request('/v1/stream-tokens', { method: 'POST', headers: other.auth, json: { taskId: task.id } }), 404)
  })
})

describe('health', () => {
  test('/healthz and /readyz answer 200 without a key', async () => {
    expect((await api.request('/healthz')).status).toBe(200)
    const ready = await api.request('/readyz')
    expect(ready.status).toBe(200)
    expect(await ready.json()).toMatchObject({ status: 'ready' })
  })

  test('an unknown route is a 404 problem', async () => {
    await expectProblem(await api.request('/v2/anything'), 404)
  })
})
