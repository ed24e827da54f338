import { afterAll, beforeAll, expect, test } from 'bun:test'
import { apiKeyCreate, tenantEnsure } from '../db/api-keys.ts'
import { createSql, type Sql } from '../db/client.ts'
import { until } from './support/fixtures.ts'
import { startOwnCluster, type OwnCluster } from './support/own-cluster.ts'
import { killAll, postTask, spawnApi, spawnWorker } from './support/processes.ts'
import { followSse, readSse, type SseEvent } from './support/sse.ts'

/**
 * PostgreSQL stopped and started again under load, on a cluster of this test's own. The API and
 * the worker keep running throughout and must recover by themselves.
 */
let cluster: OwnCluster
let url: string
let sql: Sql
let auth: Record<string, string>

beforeAll(async () => {
  cluster = await startOwnCluster('outage', { fsync: 'off' })
  url = cluster.url
  sql = createSql(url, { max: 4, applicationName: 'taskcast-test' })
  auth = { authorization: `Bearer ${await apiKeyCreate(sql, (await tenantEnsure(sql, 'outage')).id)}` }
}, 60_000)

afterAll(async () => {
  await killAll()
  await sql.end({ timeout: 1 })
  await cluster.remove()
})

const ids = (events: SseEvent[]) => events.map((event) => Number(event.id))
const oneToN = (n: number) => Array.from({ length: n }, (_, i) => i + 1)

test('no task is lost, streams miss nothing, and everything recovers without a restart', async () => {
  const env = { DATABASE_URL: url, TASKCAST_LISTEN_HEALTH_SECONDS: '2', TASKCAST_SSE_PING_SECONDS: '1' }
  const api = await spawnApi(env)
  const worker = await spawnWorker({ ...env, WORKER_CONCURRENCY: '16', TASKCAST_LEASE_SECONDS: '3' })
  const submit = (payload: Record<string, unknown>) => postTask(api.url, auth, { type: 'demo.sleep', payload })

  // A long task, watched by one client that stays connected throughout and one that drops and resumes.
  const long = await (await submit({ seconds: 6, steps: 12 })).json() as any
  const steady = followSse(await fetch(`${api.url}${long.links.events}`))
  const dropped = await readSse(await fetch(`${api.url}${long.links.events}`), (read) => read.events.length >= 3)

  // Load: a submission every 20 ms, all the way through the outage.
  const accepted: string[] = []
  const refusals: Array<{ status: number; type: string | null; retryAfter: string | null; ms: number }> = []
  let loading = true
  const load = (async () => {
    while (loading) {
      const sentAt = performance.now()
      const response = await submit({ seconds: 0.2, steps: 2 })
      const ms = performance.now() - sentAt
      if (response.status === 202) accepted.push((await response.json() as any).id)
      else refusals.push({ status: response.status, type: response.headers.get('content-type'), retryAfter: response.headers.get('retry-after'), ms })
      await Bun.sleep(20)
    }
  })()

  await until(() => accepted.length >= 30, 10_000, 'load before the outage')
  const stoppedAt = Date.now()
  await cluster.server.stop()
  await until(async () => (await fetch(`${api.url}/readyz`)).status === 503, 10_000, '/readyz to say 503')
  // Down for longer than the 3 s lease, so leases run out while no worker can renew them.
  await until(() => refusals.length >= 20 && Date.now() - stoppedAt >= 4000, 15_000, 'a 4 s outage')
  await cluster.restart()
  const restartedAt = Date.now()
  await until(async () => (await fetch(`${api.url}/readyz`)).status === 200, 30_000, '/readyz to recover')
  const readyAfterMs = Date.now() - restartedAt
  await until(() => accepted.length >= refusals.length + 60, 30_000, 'submissions to be accepted again')
  loading = false
  await load

  // The client that dropped comes back with Last-Event-ID.
  const resumed = await readSse(await fetch(`${api.url}${long.links.events}`, { headers: { 'last-event-id': dropped.events.at(-1)!.id! } }))

  await until(async () => {
    const [row] = await sql`select count(*)::int as n from taskcast.tasks where status = 'succeeded' and id = any(${accepted}::uuid[])`
    return row!.n === accepted.length
  }, 60_000, 'every accepted task to succeed')
  const [terminal] = await sql`
    select count(*) filter (where n <> 1)::int as not_once from (
      select task_id, count(*) as n from taskcast.task_events
      where task_id = any(${[...accepted, long.id]}::uuid[]) and kind = 'status' and data ->> 'status' in ('succeeded', 'failed', 'canceled')
      group by task_id) per_task`
  expect(terminal!.notOnce).toBe(0)

  // Refused requests were 503 problem+json with Retry-After, well within 5 s; nothing else failed.
  expect(refusals.every((r) => r.status === 503 && r.type === 'application/problem+json' && r.retryAfter !== null)).toBe(true)
  const slowest = Math.max(...refusals.map((r) => r.ms))
  expect(slowest).toBeLessThan(5000)

  // Its wait starts here, not when it connected: the outage and the recovery before this point
  // have budgets of their own, which a slow machine may use up.
  const steadyRead = await steady.waitFor((read) => read.ended, 30_000, 'the end of the steady stream')
  const total = steadyRead.events.length
  expect(ids(steadyRead.events)).toEqual(oneToN(total))
  expect(steadyRead.events.at(-1)!.data.status).toBe('succeeded')
  expect([...ids(dropped.events), ...ids(resumed.events)]).toEqual(oneToN(total))

  expect(api.proc.exitCode).toBeNull()
  expect(worker.proc.exitCode).toBeNull()
  console.log(`outage: ${restartedAt - stoppedAt} ms down; ${accepted.length} tasks accepted, 0 lost; ${refusals.length} refused with 503 (slowest ${Math.round(slowest)} ms); /readyz back ${readyAfterMs} ms after the restart`)
}, 120_000)
