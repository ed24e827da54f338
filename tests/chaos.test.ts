import { afterAll, beforeAll, expect, test } from 'bun:test'
import { testDb } from './support/database.ts'
import { newTenant, uniqueName, until } from './support/fixtures.ts'
import { killAll, spawnApi, spawnWorker } from './support/processes.ts'

/**
 * 1,000 short tasks, 3 workers, one of them killed with -9 and restarted again and again. Each
 * task is an http.request to this test's own server, which records every execution it sees
 * (start, and end or the worker's connection dropping) in a table the test owns.
 */
const total = 1000
const kills = 5
const holdMs = 40
let api: Awaited<ReturnType<typeof spawnApi>>
let receiver: ReturnType<typeof Bun.serve>
let completed = 0

beforeAll(async () => {
  const { sql } = testDb()
  await sql`create table chaos_executions (
    id serial primary key, task_id uuid not null, attempt int not null,
    started_at timestamptz not null, ended_at timestamptz not null, completed boolean not null)`
  receiver = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    async fetch(request) {
      const startedAt = new Date()
      const taskId = request.headers.get('taskcast-task-id')!
      const attempt = Number(request.headers.get('taskcast-attempt'))
      const finished = await Promise.race([
        Bun.sleep(holdMs).then(() => true),
        new Promise<false>((resolve) => request.signal.addEventListener('abort', () => resolve(false), { once: true })),
      ])
      await sql`insert into chaos_executions (task_id, attempt, started_at, ended_at, completed)
                values (${taskId}, ${attempt}, ${startedAt}, ${new Date()}, ${finished})`
      if (finished) completed++
      return Response.json({ ok: true })
    },
  })
  api = await spawnApi()
}, 30_000)

afterAll(async () => {
  await killAll()
  receiver.stop(true)
})

test('every task ends succeeded exactly once, and no task ever runs in two workers at once', async () => {
  const { sql } = testDb()
  const tenant = await newTenant()
  const queue = uniqueName('chaos')
  const env = { WORKER_QUEUES: queue, WORKER_CONCURRENCY: '8', TASKCAST_LEASE_SECONDS: '2' }
  let victim = await spawnWorker(env)
  await Promise.all([spawnWorker(env), spawnWorker(env)])

  const tasks = Array.from({ length: total }, (_, i) => ({
    type: 'http.request', queue, payload: { url: `http://127.0.0.1:${receiver.port}/run`, body: { i } },
  }))
  const response = await fetch(`${api.url}/v1/tasks/batch`, {
    method: 'POST', headers: { ...tenant.auth, 'content-type': 'application/json' }, body: JSON.stringify({ tasks }),
  })
  expect(response.status).toBe(202)

  // Kill the victim each time another 150 executions have completed, and start a fresh one.
  for (let k = 0; k < kills; k++) {
    const target = Math.min(total - 100, completed + 150)
    await until(() => completed >= target, 60_000, `${target} completed executions`)
    victim.proc.kill('SIGKILL')
    await victim.proc.exited
    victim = await spawnWorker(env)
  }

  await until(async () => {
    const [row] = await sql`select count(*)::int as n from taskcast.tasks where queue = ${queue} and status = 'succeeded'`
    return row!.n === total
  }, 60_000, `all ${total} tasks to succeed`)

  const [terminal] = await sql`
    select count(*)::int as tasks, count(*) filter (where n <> 1)::int as not_once from (
      select e.task_id, count(*) as n from taskcast.task_events e join taskcast.tasks t on t.id = e.task_id
      where t.queue = ${queue} and e.kind = 'status' and e.data ->> 'status' in ('succeeded', 'failed', 'canceled')
      group by e.task_id) per_task`
  expect(terminal).toEqual({ tasks: total, notOnce: 0 })

  const [overlaps] = await sql`
    select count(*)::int as n from chaos_executions a join chaos_executions b
      on a.task_id = b.task_id and a.id < b.id and a.started_at < b.ended_at and b.started_at < a.ended_at`
  expect(overlaps!.n).toBe(0)

  const [runs] = await sql`
    select count(*)::int as executions, count(*) filter (where not completed)::int as cut_short,
           count(distinct task_id)::int as tasks from chaos_executions`
  expect(runs!.tasks).toBe(total)
  console.log(`chaos: ${total} tasks, ${kills} kills, ${runs!.executions} executions, ${runs!.cutShort} cut short by a kill, 0 lost, 0 overlapping`)
}, 120_000)
