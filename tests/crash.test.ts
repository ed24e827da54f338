import { afterAll, beforeAll, expect, test } from 'bun:test'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { apiKeyCreate, tenantEnsure } from '../db/api-keys.ts'
import { createSql } from '../db/client.ts'
import { until } from './support/fixtures.ts'
import { startOwnCluster, type OwnCluster } from './support/own-cluster.ts'
import { killAll, spawnApi } from './support/processes.ts'

/**
 * PostgreSQL crashing while tasks are submitted, on a cluster of this test's own with durable
 * settings. An immediate shutdown ends the server at once: WAL it has not yet written out is gone,
 * as in a crash. The WAL writer here waits 10 s between rounds, so a commit that did not wait for
 * its flush is likely to be among what is lost.
 */
let cluster: OwnCluster

beforeAll(async () => {
  cluster = await startOwnCluster('crash', { wal_writer_delay: '10s' })
}, 60_000)

afterAll(async () => {
  await killAll()
  await cluster.remove()
})

/** Ends the server as a crash would: SIGQUIT to the postmaster is PostgreSQL's immediate shutdown. */
async function crash() {
  const pid = Number(readFileSync(join(cluster.server.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  process.kill(pid, 'SIGQUIT')
  const alive = () => {
    try {
      process.kill(pid, 0)
      return true
    } catch {
      return false
    }
  }
  await until(() => !alive(), 30_000, 'the postmaster to exit')
}

test('every task answered 202, alone or in a batch, is still there after PostgreSQL crashes mid-submission', async () => {
  let sql = createSql(cluster.url, { max: 1, applicationName: 'taskcast-test' })
  const auth = { authorization: `Bearer ${await apiKeyCreate(sql, (await tenantEnsure(sql, 'crash')).id)}` }
  await sql.end()
  const api = await spawnApi({ DATABASE_URL: cluster.url })

  const acknowledged: string[] = []
  let crashed = false
  const task = { type: 'demo.noop', queue: 'crash' }
  // Seven clients submit one task a request, one five at a time through the batch route.
  const submitter = async (_: unknown, client: number) => {
    const batch = client === 7
    for (;;) {
      const response = await fetch(`${api.url}/v1/tasks${batch ? '/batch' : ''}`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify(batch ? { tasks: Array.from({ length: 5 }, () => task) } : task),
        // The API answers every request within seconds, the database up or not.
        signal: AbortSignal.timeout(10_000),
      })
      if (response.status === 202) {
        const body = (await response.json()) as { id: string } | { items: Array<{ id: string }> }
        acknowledged.push(...('items' in body ? body.items.map((item) => item.id) : [body.id]))
        continue
      }
      if (!crashed) throw new Error(`${response.status} before the crash: ${await response.text()}`)
      return
    }
  }
  const submitters = Array.from({ length: 8 }, submitter)
  await until(() => acknowledged.length >= 1000, 30_000, '1,000 tasks accepted')
  crashed = true
  await crash()
  await Promise.all(submitters)
  await api.stop('SIGKILL')

  await cluster.restart()
  sql = createSql(cluster.url, { max: 1, applicationName: 'taskcast-test' })
  const [{ found }] = await sql<[{ found: number }]>`
    select count(*)::int as found from taskcast.tasks where id = any(${acknowledged}::uuid[])`
  await sql.end()
  console.log(`crash: ${acknowledged.length} tasks answered 202, ${found} found after recovery`)
  expect(found).toBe(acknowledged.length)
}, 90_000)
