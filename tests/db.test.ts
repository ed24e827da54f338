import { describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import { apiKeyCreate, tenantEnsure } from '../db/api-keys.ts'
import { createSql, type Queryable } from '../db/client.ts'
import { migrate, migrationsApplied, readMigrations } from '../db/migrate.ts'
import { taskEventsAfter } from '../db/task-events.ts'
import {
  taskClaim, taskClaimCandidates, taskClaimUpdate, taskProgress, taskProgressMany, taskProgressUpdate, taskSucceed, taskSucceedMany,
  taskSucceedUpdate, type Lease,
} from '../db/task-leases.ts'
import { taskCancel, taskGet, taskInsert, taskInsertDurably } from '../db/tasks.ts'
import { testDb, withFreshDatabase } from './support/database.ts'
import { newTask, newTenant, uniqueName } from './support/fixtures.ts'

const claimAll = (queue: string, limit = 100, workerId = 'w1') =>
  taskClaim(testDb().sql, { workerId, queues: [queue], limit, leaseSeconds: 30 })

describe('migrations', () => {
  test('applying them again changes nothing', async () => {
    expect(await migrate(testDb().sql)).toEqual([])
    expect(await migrationsApplied(testDb().sql)).toBe(readMigrations().at(-1)!.version)
  })

  test('concurrent runs on an empty database apply each file exactly once', async () => {
    await withFreshDatabase(async (url) => {
      const pools = Array.from({ length: 4 }, () => createSql(url, { max: 1, applicationName: 'taskcast-test' }))
      try {
        const results = await Promise.all(pools.map((sql) => migrate(sql)))
        const applied = results.flat().map((migration) => migration.name)
        expect(applied).toEqual(readMigrations().map((migration) => migration.name))
        const rows = await pools[0]!`select version from taskcast.migrations`
        expect(rows.length).toBe(readMigrations().length)
      } finally {
        await Promise.all(pools.map((sql) => sql.end()))
      }
    })
  })

  test('an applied migration whose file changed is refused', async () => {
    const changed = readMigrations().map((migration, index) =>
      index === 0 ? { ...migration, checksum: 'edited' } : migration)
    expect(migrate(testDb().sql, changed)).rejects.toThrow(/changed after it was applied/)
  })
})

describe('schema constraints', () => {
  test('reject an unknown status, an out-of-range percent, a malformed queue name and finished_at without a terminal status', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const violation = (query: Promise<unknown>) => expect(query).rejects.toMatchObject({ code: '23514' })
    await violation(sql`update taskcast.tasks set status = 'paused' where id = ${task!.id}`)
    await violation(sql`update taskcast.tasks set progress = '{"percent": 101}' where id = ${task!.id}`)
    await violation(sql`update taskcast.tasks set progress = '{"percent": "half"}' where id = ${task!.id}`)
    await violation(sql`update taskcast.tasks set progress = '[50]' where id = ${task!.id}`)
    await violation(sql`
      insert into taskcast.task_events (task_id, tenant_id, seq, kind, data)
      values (${task!.id}, ${tenant.id}, 9, 'progress', '{"percent": -1}')`)
    for (const progress of [{ percent: 0 }, { percent: 100, message: 'done' }, { message: 'no percent' }, { percent: null }]) {
      await sql`update taskcast.tasks set progress = ${sql.json(progress)} where id = ${task!.id}`
    }
    await violation(sql`update taskcast.tasks set finished_at = now() where id = ${task!.id}`)
    await violation(sql`update taskcast.tasks set status = 'succeeded', attempt = 1 where id = ${task!.id}`)
    await violation(sql`update taskcast.tasks set priority = 101 where id = ${task!.id}`)
    for (const queue of ['', 'Upper', '-leading', 'sp ace', 'x'.repeat(64), 'é']) {
      await violation(sql`update taskcast.tasks set queue = ${queue} where id = ${task!.id}`)
    }
    for (const queue of ['q', '0.a_b-c', 'x'.repeat(63)]) await sql`update taskcast.tasks set queue = ${queue} where id = ${task!.id}`
  })

  test('deleting a tenant deletes its tasks, their events and its keys, and no other tenant\'s', async () => {
    const { sql } = testDb()
    const [doomed, kept] = [await newTenant(), await newTenant()]
    await apiKeyCreate(sql, doomed.id)
    const [gone] = await taskInsert(sql, [newTask(doomed.id)])
    const [stays] = await taskInsert(sql, [newTask(kept.id)])
    await sql`delete from taskcast.tenants where id = ${doomed.id}`
    const left = async (table: string, tenantId: string) =>
      (await sql<[{ n: number }]>`select count(*)::int as n from ${sql(`taskcast.${table}`)} where tenant_id = ${tenantId}`)[0].n
    expect(await taskGet(sql, doomed.id, gone!.id)).toBeUndefined()
    expect([await left('tasks', doomed.id), await left('task_events', doomed.id), await left('api_keys', doomed.id)]).toEqual([0, 0, 0])
    expect(await taskGet(sql, kept.id, stays!.id)).toMatchObject({ id: stays!.id })
    expect(await left('task_events', kept.id)).toBe(1)
  })
})

describe('taskInsert', () => {
  test('returns each task as it is stored, in the order given', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const later = new Date(Date.now() + 60_000)
    const tasks = await taskInsert(sql, [
      newTask(tenant.id, { payload: { b: [1, 2.5, 'x'], a: { nested: null } }, priority: 7 }),
      newTask(tenant.id, { runAt: later, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }),
    ])
    const stored = await Promise.all(tasks.map((task) => taskGet(sql, tenant.id, task.id)))
    expect(tasks).toEqual(stored as typeof tasks)
    expect(tasks[1]!.runAt.getTime()).toBe(later.getTime())
  })

  test('stores every column as given, whether the tasks share its value or each has its own', async () => {
    const { sql } = testDb()
    const [one, other] = [await newTenant(), await newTenant()]
    const later = new Date(Date.now() + 60_000)
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'
    const alike = { type: 'demo.noop', queue: uniqueName('q'), priority: 5, maxAttempts: 2, timeoutSeconds: 99, runAt: later, traceparent, tracestate: 'k=v' }
    const sharing = Array.from({ length: 3 }, (_, i) => newTask(one.id, { ...alike, payload: { i } }))
    const differing = [
      newTask(one.id, { ...alike, payload: { i: 0 } }),
      newTask(other.id, { type: 'demo.sleep', priority: -3, maxAttempts: 7, timeoutSeconds: 5, runAt: null, traceparent: null, tracestate: null }),
    ]
    for (const batch of [sharing, differing]) {
      const tasks = await taskInsert(sql, batch)
      const stored = await Promise.all(tasks.map((task) => taskGet(sql, task.tenantId, task.id)))
      expect(stored).toEqual(batch.map((task, i) => expect.objectContaining({
        ...task, status: 'queued', runAt: task.runAt ?? stored[i]!.createdAt,
      })))
      expect(tasks).toEqual(stored as typeof tasks)
    }
  })

  test('durably: the flush goes right behind the insert on its one connection, whose commits stay asynchronous', async () => {
    const { sql, url } = testDb()
    const tenant = await newTenant()
    const sent: string[] = []
    const connection = postgres(url, {
      max: 1, onnotice: () => {}, transform: { column: { from: postgres.toCamel } },
      connection: { synchronous_commit: 'off' },
      debug: (_connection, statement) => sent.push(
        statement.includes('pg_logical_emit_message') ? 'flush' : statement.includes('insert into taskcast.tasks') ? 'insert' : statement),
    })
    try {
      await connection`select 1` // connected, its array types read
      // One task takes the hand-off statement, several the plain insert; pipelined or not.
      for (const pipelined of [true, false]) {
        for (const count of [1, 3]) {
          sent.length = 0
          const batch = Array.from({ length: count }, () => newTask(tenant.id))
          const tasks = await taskInsertDurably(connection, batch, { pipelined })
          expect(sent).toEqual(['insert', 'flush'])
          const stored = await Promise.all(tasks.map((task) => taskGet(sql, tenant.id, task.id)))
          expect(stored.map((task) => task?.id)).toEqual(batch.map((task) => task.id))
        }
      }
      const [{ synchronousCommit }] = await connection<[{ synchronousCommit: string }]>`show synchronous_commit`
      expect(synchronousCommit).toBe('off')
    } finally {
      await connection.end()
    }
  })
})

describe('taskClaim', () => {
  test('is served by the partial index over queued rows', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    await taskInsert(sql, Array.from({ length: 3000 }, () => newTask(tenant.id, { queue })))
    await sql`update taskcast.tasks set status = 'canceled', finished_at = now() where queue = ${queue}`
    await taskInsert(sql, Array.from({ length: 20 }, () => newTask(tenant.id, { queue })))
    await sql`analyze taskcast.tasks`
    const plan = await sql.begin(async (tx) => {
      const [row] = await tx`explain (format json) ${taskClaimCandidates(tx, [queue], 10)}`
      return JSON.stringify(row)
    })
    expect(plan).toContain('tasks_claim_idx')
    expect(plan).not.toContain('Seq Scan')
    expect(plan).not.toContain('"Sort"')
  })

  test('on a worker pool, cached plans walk indexes and a claim locks its candidates once, whatever the statistics say', async () => {
    await withFreshDatabase(async (url) => {
      const sql = createSql(url, { max: 1, applicationName: 'taskcast-test-worker-plans', noTableScans: true })
      try {
        await migrate(sql)
        const tenant = await tenantEnsure(sql, 'plans')
        const queue = uniqueName('q')
        /** Every node of the plan PostgreSQL caches for a statement (generic), run for real. */
        const cachedPlan = (statement: (tx: Queryable) => postgres.PendingQuery<postgres.Row[]>) => sql.begin(async (tx) => {
          await tx`set local plan_cache_mode = force_generic_plan`
          const [row] = await tx`explain (analyze, format json) ${statement(tx)}`
          const nodes: Array<Record<string, unknown>> = []
          const walk = (node: Record<string, unknown>) => {
            nodes.push(node)
            for (const child of (node.Plans as Array<Record<string, unknown>> | undefined) ?? []) walk(child)
          }
          walk((Object.values(row!)[0] as Array<{ Plan: Record<string, unknown> }>)[0]!.Plan)
          return nodes
        })
        const claimPlan = () => cachedPlan((tx) => taskClaimUpdate(tx, { workerId: 'w1', queues: [queue], limit: 10, leaseSeconds: 30 }))
        const scansOfTasks = (nodes: Array<Record<string, unknown>>) =>
          nodes.filter((node) => node['Relation Name'] === 'tasks' && node['Node Type'] !== 'ModifyTable')
            .map((node) => `${node['Node Type']} ${node['Index Name'] ?? ''}`.trim())
        const locks = (nodes: Array<Record<string, unknown>>) =>
          nodes.filter((node) => node['Node Type'] === 'LockRows').map((node) => node['Actual Loops'])

        // A new install, never analyzed: planned for a table of a few pages, where a sequential
        // scan is cheapest, it must still use the indexes.
        await taskInsert(sql, Array.from({ length: 20 }, () => newTask(tenant.id, { queue })))
        const fresh = await claimPlan()
        expect(scansOfTasks(fresh).toSorted()).toEqual(['Index Scan tasks_claim_idx', 'Index Scan tasks_pkey'])
        expect(locks(fresh)).toEqual([1])
        const claimed = await sql<Array<{ id: string }>>`select id from taskcast.tasks where status = 'running'`
        const progress = await cachedPlan((tx) => taskProgressUpdate(tx, 'w1',
          claimed.map(({ id }) => ({ lease: { id, attempt: 1, workerId: 'w1' }, progress: { percent: 50 } }))))
        expect(scansOfTasks(progress)).toEqual(['Index Scan tasks_pkey'])
        expect(progress.find((node) => node['Node Type'] === 'ModifyTable')!['Actual Rows']).toBe(10)
        const successes = await cachedPlan((tx) => taskSucceedUpdate(tx, 'w1',
          claimed.map(({ id }) => ({ lease: { id, attempt: 1, workerId: 'w1' }, result: { ok: true } }))))
        expect(scansOfTasks(successes)).toEqual(['Index Scan tasks_pkey'])
        expect(successes.find((node) => node['Node Type'] === 'ModifyTable')!['Actual Rows']).toBe(10)

        // Statistics taken when every row was dead: the planner believes the table stays empty.
        // Joined to the table, the locking subquery ran once per row of it (300 times here).
        await taskInsert(sql, Array.from({ length: 2000 }, () => newTask(tenant.id, { queue })))
        await sql`delete from taskcast.task_events`
        await sql`delete from taskcast.tasks`
        await sql`analyze taskcast.tasks`
        await taskInsert(sql, Array.from({ length: 300 }, () => newTask(tenant.id, { queue })))
        const stale = await claimPlan()
        expect(scansOfTasks(stale).filter((scan) => !scan.startsWith('Index Scan'))).toEqual([])
        expect(locks(stale)).toEqual([1])

        const [{ running }] = await sql<[{ running: number }]>`
          select count(*)::int as running from taskcast.tasks where status = 'running'`
        expect(running).toBe(10)
      } finally {
        await sql.end()
      }
    })
  })

  test('on a worker pool, a statement that must read a table whole is not JIT-compiled', async () => {
    // Where sequential scans are off, the planner prices one at ~10^10, past jit_above_cost; a
    // server built with LLVM then compiled such a statement at every run (postgres.js's type
    // lookup, on every new connection: ~240 ms). A server built without LLVM (the embedded one)
    // never compiles, so the setting is checked too.
    const { url } = testDb()
    const sql = createSql(url, { max: 1, applicationName: 'taskcast-test-worker-jit', noTableScans: true })
    try {
      const [{ jit }] = await sql<[{ jit: string }]>`select current_setting('jit') as jit`
      expect(jit).toBe('off')
      const [row] = await sql`
        explain (analyze, format json)
        select b.oid, b.typarray from pg_catalog.pg_type a left join pg_catalog.pg_type b on b.oid = a.typelem
        where a.typcategory = 'A' group by b.oid, b.typarray order by b.oid`
      const [plan] = Object.values(row!)[0] as Array<{ Plan: { 'Total Cost': number }; JIT?: unknown }>
      expect(plan!.Plan['Total Cost']).toBeGreaterThan(100_000) // jit_above_cost: compiled, were JIT on
      expect(plan!.JIT).toBeUndefined()
    } finally {
      await sql.end()
    }
  })

  test('concurrent claims never hand out the same task', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const inserted = await taskInsert(sql, Array.from({ length: 300 }, () => newTask(tenant.id, { queue })))
    const claimed: string[] = []
    await Promise.all(Array.from({ length: 10 }, async (_, claimer) => {
      for (;;) {
        const batch = await claimAll(queue, 7, `w${claimer}`)
        if (batch.length === 0) return
        claimed.push(...batch.map((task) => task.id))
      }
    }))
    expect(claimed.length).toBe(300)
    expect(new Set(claimed).size).toBe(300)
    expect(new Set(claimed)).toEqual(new Set(inserted.map((task) => task.id)))
  })

  test('takes the highest priority first, then the oldest runAt', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const at = (secondsAgo: number) => new Date(Date.now() - secondsAgo * 1000)
    const [low, highNewer, highOlder, middle] = await taskInsert(sql, [
      newTask(tenant.id, { queue, priority: -5, runAt: at(100) }),
      newTask(tenant.id, { queue, priority: 10, runAt: at(10) }),
      newTask(tenant.id, { queue, priority: 10, runAt: at(20) }),
      newTask(tenant.id, { queue, priority: 0, runAt: at(50) }),
    ])
    const order: string[] = []
    for (let i = 0; i < 4; i++) order.push((await claimAll(queue, 1))[0]!.id)
    expect(order).toEqual([highOlder!.id, highNewer!.id, middle!.id, low!.id])
  })

  test('takes at most the limit, only from its queues, and nothing before its runAt', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const [mine, other] = [uniqueName('q'), uniqueName('q')]
    await taskInsert(sql, [
      ...Array.from({ length: 5 }, () => newTask(tenant.id, { queue: mine })),
      newTask(tenant.id, { queue: mine, runAt: new Date(Date.now() + 3_600_000) }),
      newTask(tenant.id, { queue: other }),
    ])
    expect((await claimAll(mine, 3)).length).toBe(3)
    expect((await claimAll(mine, 10)).length).toBe(2)
    expect(await claimAll(mine, 10)).toEqual([])
    expect((await claimAll(other, 10)).length).toBe(1)
  })

  test('starts the next attempt under a lease and records a running event', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    const [claimed] = await claimAll(task!.queue, 1, 'worker-a')
    expect(claimed).toMatchObject({ id: task!.id, type: task!.type, payload: task!.payload, attempt: 1, maxAttempts: task!.maxAttempts })
    const stored = await taskGet(sql, tenant.id, task!.id)
    expect(stored).toMatchObject({ status: 'running', attempt: 1, lockedBy: 'worker-a', lastSeq: 2 })
    expect(stored!.leaseUntil!.getTime()).toBeGreaterThan(Date.now() + 25_000)
    expect(claimed!.startedAt).toEqual(stored!.startedAt)
    const events = await taskEventsAfter(sql, task!.id, 0)
    expect(events.map((event) => [event.seq, event.kind, event.data])).toEqual([
      [1, 'status', { status: 'queued', attempt: 0 }],
      [2, 'status', { status: 'running', attempt: 1 }],
    ])
  })
})

describe('writes of a claimed attempt', () => {
  /** Three tasks of a new queue, claimed by worker-a, and the lease of each. */
  async function threeClaimed() {
    const { sql } = testDb()
    const tenant = await newTenant()
    const queue = uniqueName('q')
    const tasks = await taskInsert(sql, [newTask(tenant.id, { queue }), newTask(tenant.id, { queue }), newTask(tenant.id, { queue })])
    await claimAll(queue, 3, 'worker-a')
    const lease = (i: number): Lease => ({ id: tasks[i]!.id, attempt: 1, workerId: 'worker-a' })
    return { sql, tenant, tasks, lease }
  }

  test('many successes are stored in one statement, each fenced by its own lease', async () => {
    const { sql, tenant, tasks, lease } = await threeClaimed()
    const stored = await taskSucceedMany(sql, 'worker-a', [
      { lease: lease(2), result: { n: 2 } },
      { lease: { ...lease(0), attempt: 2 }, result: { stale: true } },
      { lease: lease(1), result: null },
    ])
    expect(stored).toEqual([true, false, true])
    const rows = await Promise.all(tasks.map((task) => taskGet(sql, tenant.id, task.id)))
    expect(rows.map((row) => [row!.status, row!.result])).toEqual([['running', null], ['succeeded', null], ['succeeded', { n: 2 }]])
    const events = await taskEventsAfter(sql, tasks[2]!.id, 0)
    expect(events.at(-1)!.data).toEqual({ status: 'succeeded', attempt: 1, result: { n: 2 } })
    expect((await taskEventsAfter(sql, tasks[0]!.id, 0)).at(-1)!.data).toMatchObject({ status: 'running' })
  })

  test('many progress reports are stored in one statement, each on its own task and fenced by its own lease', async () => {
    const { sql, tenant, tasks, lease } = await threeClaimed()
    const stored = await taskProgressMany(sql, 'worker-a', [
      { lease: lease(2), progress: { percent: 20, message: 'two' } },
      { lease: { ...lease(0), attempt: 2 }, progress: { percent: 99 } },
      { lease: lease(1), progress: { percent: 10 } },
    ])
    expect(stored).toEqual([true, false, true])
    const rows = await Promise.all(tasks.map((task) => taskGet(sql, tenant.id, task.id)))
    expect(rows.map((row) => row!.progress)).toEqual([null, { percent: 10 }, { percent: 20, message: 'two' }])
    const last = await Promise.all(tasks.map(async (task) => (await taskEventsAfter(sql, task.id, 0)).at(-1)!))
    expect(last.map((event) => [event.seq, event.kind, event.data])).toEqual([
      [2, 'status', { status: 'running', attempt: 1 }],
      [3, 'progress', { percent: 10 }],
      [3, 'progress', { percent: 20, message: 'two' }],
    ])
  })

  test('are fenced by task, attempt and worker', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const [task] = await taskInsert(sql, [newTask(tenant.id)])
    await claimAll(task!.queue, 1, 'worker-a')
    const lease: Lease = { id: task!.id, attempt: 1, workerId: 'worker-a' }
    expect(await taskSucceed(sql, { ...lease, attempt: 2 }, { late: true })).toBe(false)
    expect(await taskSucceed(sql, { ...lease, workerId: 'worker-b' }, { late: true })).toBe(false)
    expect(await taskProgress(sql, { ...lease, workerId: 'worker-b' }, { percent: 5 })).toBe(false)
    expect(await taskProgress(sql, lease, { percent: 50, message: 'half' })).toBe(true)
    expect(await taskSucceed(sql, lease, { ok: true })).toBe(true)
    expect(await taskGet(sql, tenant.id, task!.id)).toMatchObject({
      status: 'succeeded', result: { ok: true }, lockedBy: null, progress: { percent: 50 },
    })
    expect(await taskSucceed(sql, lease, { again: true })).toBe(false)
    const events = await taskEventsAfter(sql, task!.id, 0)
    expect(events.map((event) => [event.seq, event.kind])).toEqual([
      [1, 'status'], [2, 'status'], [3, 'progress'], [4, 'status'],
    ])
    expect(events[3]!.data).toEqual({ status: 'succeeded', attempt: 1, result: { ok: true } })
  })
})

describe('taskCancel', () => {
  test('cancels a queued task at once, flags a running one, and leaves a finished one', async () => {
    const { sql } = testDb()
    const tenant = await newTenant()
    const [queued, running] = await taskInsert(sql, [newTask(tenant.id), newTask(tenant.id)])
    await claimAll(running!.queue, 1)

    const first = await taskCancel(sql, tenant.id, queued!.id)
    expect(first).toMatchObject({ outcome: 'canceled', task: { status: 'canceled', cancelRequested: true } })
    expect((await taskEventsAfter(sql, queued!.id, 1))[0]!.data).toMatchObject({ status: 'canceled' })

    expect(await taskCancel(sql, tenant.id, running!.id)).toMatchObject({
      outcome: 'requested', task: { status: 'running', cancelRequested: true },
    })
    expect(await taskCancel(sql, tenant.id, queued!.id)).toMatchObject({ outcome: 'finished' })
    const stranger = await newTenant()
    expect(await taskCancel(sql, stranger.id, queued!.id)).toEqual({ outcome: 'missing' })
  })
})
