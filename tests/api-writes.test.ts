import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { taskEventsAfter } from '../db/task-events.ts'
import { taskClaim, taskFail } from '../db/task-leases.ts'
import { testDb } from './support/database.ts'
import { newTenant, startApp, uniqueName } from './support/fixtures.ts'

let api: Awaited<ReturnType<typeof startApp>>
beforeAll(async () => {
  api = await startApp()
})
afterAll(() => api.stop())

type Tenant = Awaited<ReturnType<typeof newTenant>>
const sleepTask = (seconds = 1) => ({ type: 'demo.sleep', payload: { seconds }, queue: uniqueName('q') })

const post = (tenant: Tenant, path: string, json?: unknown, headers: Record<string, string> = {}) =>
  api.request(path, { method: 'POST', headers: { ...tenant.auth, ...headers }, json })

const countTasks = async (tenantId: string) =>
  (await testDb().sql`select count(*)::int as n from taskcast.tasks where tenant_id = ${tenantId}`)[0]!.n as number

describe('Idempotency-Key', () => {
  test('the same key and body within 24 h return the first task with 200 and Idempotent-Replayed', async () => {
    const tenant = await newTenant()
    const body = sleepTask()
    const first = await post(tenant, '/v1/tasks', body, { 'idempotency-key': 'order-17' })
    expect(first.status).toBe(202)
    expect(first.headers.get('idempotent-replayed')).toBeNull()
    const created = await first.json() as any
    // The same request with its keys in another order is the same request.
    const reordered = { queue: body.queue, payload: body.payload, type: body.type }
    const again = await post(tenant, '/v1/tasks', reordered, { 'idempotency-key': 'order-17' })
    expect(again.status).toBe(200)
    expect(again.headers.get('idempotent-replayed')).toBe('true')
    expect(again.headers.get('location')).toBe(`/v1/tasks/${created.id}`)
    expect((await again.json() as any).id).toBe(created.id)
    expect(await countTasks(tenant.id)).toBe(1)
  })

  test('the same key with another body is 409 and stores nothing', async () => {
    const tenant = await newTenant()
    expect((await post(tenant, '/v1/tasks', sleepTask(1), { 'idempotency-key': 'k' })).status).toBe(202)
    const clash = await post(tenant, '/v1/tasks', sleepTask(2), { 'idempotency-key': 'k' })
    expect(clash.status).toBe(409)
    expect(clash.headers.get('content-type')).toBe('application/problem+json')
    expect(await countTasks(tenant.id)).toBe(1)
  })

  test('concurrent identical requests create exactly one task', async () => {
    const tenant = await newTenant()
    const body = sleepTask()
    const responses = await Promise.all(Array.from({ length: 20 }, () =>
      post(tenant, '/v1/tasks', body, { 'idempotency-key': 'burst' })))
    const statuses = responses.map((response) => response.status).sort()
    expect(statuses).toEqual([200, ...Array(18).fill(200), 202].sort())
    const ids = new Set(await Promise.all(responses.map(async (response) => (await response.json() as any).id)))
    expect(ids.size).toBe(1)
    expect(await countTasks(tenant.id)).toBe(1)
  })

  test('keys are per tenant, and a key older than 24 h starts afresh', async () => {
    const [a, b] = [await newTenant(), await newTenant()]
    const body = sleepTask()
    expect((await post(a, '/v1/tasks', body, { 'idempotency-key': 'shared' })).status).toBe(202)
    expect((await post(b, '/v1/tasks', body, { 'idempotency-key': 'shared' })).status).toBe(202)
    await testDb().sql`update taskcast.idempotency_keys set created_at = now() - interval '25 hours' where tenant_id = ${a.id}`
    expect((await post(a, '/v1/tasks', sleepTask(3), { 'idempotency-key': 'shared' })).status).toBe(202)
    expect(await countTasks(a.id)).toBe(2)
  })

  test('a key longer than 255 characters is 400', async () => {
    const tenant = await newTenant()
    const response = await post(tenant, '/v1/tasks', sleepTask(), { 'idempotency-key': 'x'.repeat(256) })
    expect(response.status).toBe(400)
    expect(await countTasks(tenant.id)).toBe(0)
  })
})

describe('POST /v1/tasks/batch', () => {
  test('stores up to 1000 tasks in order with 202', async () => {
    const tenant = await newTenant()
    const tasks = Array.from({ length: 1000 }, (_, i) => ({ ...sleepTask(), priority: (i % 200) - 100 }))
    const response = await post(tenant, '/v1/tasks/batch', { tasks })
    expect(response.status).toBe(202)
    const { items } = await response.json() as any
    expect(items.map((item: any) => item.priority)).toEqual(tasks.map((task) => task.priority))
    expect(items.every((item: any) => item.status === 'queued')).toBe(true)
    expect(await countTasks(tenant.id)).toBe(1000)
  })

  test('stores nothing when one task is invalid, and names it', async () => {
    const tenant = await newTenant()
    const tasks = [sleepTask(), sleepTask(), { type: 'demo.sleep', payload: { seconds: -1 } }]
    const response = await post(tenant, '/v1/tasks/batch', { tasks })
    expect(response.status).toBe(422)
    const problem = await response.json() as any
    expect(problem.errors).toEqual([{ path: '/tasks/2/payload/seconds', message: expect.any(String) }])
    expect(await countTasks(tenant.id)).toBe(0)
  })

  test('refuses an empty batch and one over 1000', async () => {
    const tenant = await newTenant()
    expect((await post(tenant, '/v1/tasks/batch', { tasks: [] })).status).toBe(422)
    const tooMany = Array.from({ length: 1001 }, () => ({ type: 'demo.sleep', payload: { seconds: 0 } }))
    expect((await api.request('/v1/tasks/batch', { method: 'POST', headers: tenant.auth, json: { tasks: tooMany } })).status).toBe(422)
    expect(await countTasks(tenant.id)).toBe(0)
  })
})

describe('POST /v1/tasks/:id/retry', () => {
  test('queues a failed task again with a fresh attempt budget; the failed ones are the dead-letter list', async () => {
    const tenant = await newTenant()
    const created = await (await post(tenant, '/v1/tasks', { ...sleepTask(), maxAttempts: 1 })).json() as any
    const [claimed] = await taskClaim(testDb().sql, { workerId: 'w', queues: [created.queue], limit: 1, leaseSeconds: 30 })
    await taskFail(testDb().sql, { id: claimed!.id, attempt: 1, workerId: 'w' }, { name: 'Error', message: 'boom', retryable: true })
    const deadLetters = await (await api.request('/v1/tasks?status=failed', { headers: tenant.auth })).json() as any
    expect(deadLetters.items.map((item: any) => item.id)).toEqual([created.id])

    const response = await post(tenant, `/v1/tasks/${created.id}/retry`)
    expect(response.status).toBe(202)
    expect(await response.json()).toMatchObject({ status: 'queued', attempt: 0, maxAttempts: 1, finishedAt: null, error: { message: 'boom' } })
    const events = await taskEventsAfter(testDb().sql, created.id, 0)
    expect(events.at(-1)!.data).toEqual({ status: 'queued', attempt: 0, reason: 'retried by request' })
    // Queued again: it can be claimed, and retrying it now is a conflict.
    expect((await post(tenant, `/v1/tasks/${created.id}/retry`)).status).toBe(409)
    expect(await taskClaim(testDb().sql, { workerId: 'w', queues: [created.queue], limit: 1, leaseSeconds: 30 })).toHaveLength(1)
  })

  test('retries a canceled task; an unknown one is 404', async () => {
    const tenant = await newTenant()
    const created = await (await post(tenant, '/v1/tasks', sleepTask())).json() as any
    await post(tenant, `/v1/tasks/${created.id}/cancel`)
    expect((await post(tenant, `/v1/tasks/${created.id}/retry`)).status).toBe(202)
    expect((await post(tenant, `/v1/tasks/${Bun.randomUUIDv7()}/retry`)).status).toBe(404)
    const other = await newTenant()
    expect((await post(other, `/v1/tasks/${created.id}/retry`)).status).toBe(404)
  })
})
