import { afterAll, beforeAll, expect, test } from 'bun:test'
import net from 'node:net'
import { createSql, isConnectionError } from '../db/client.ts'
import { testDb } from './support/database.ts'

/**
 * A pool's connection reset under it (as when PostgreSQL crashes: a backend killed with unread
 * input answers with a reset), through a TCP proxy that can reset the client's side at will.
 */
let proxy: net.Server
let proxyUrl: string
const clientSockets = new Set<net.Socket>()

beforeAll(async () => {
  const target = new URL(testDb().url)
  proxy = net.createServer((client) => {
    const server = net.connect(Number(target.port), target.hostname)
    clientSockets.add(client)
    client.pipe(server).pipe(client)
    const close = () => {
      clientSockets.delete(client)
      client.destroy()
      server.destroy()
    }
    client.on('error', close).on('close', close)
    server.on('error', close).on('close', close)
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  const url = new URL(testDb().url)
  url.hostname = '127.0.0.1'
  url.port = String((proxy.address() as net.AddressInfo).port)
  proxyUrl = url.toString()
})

afterAll(() => proxy.close())

const settleWithin = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([
    promise.then((value) => ({ outcome: 'resolved' as const, value }), (error: unknown) => ({ outcome: 'rejected' as const, error })),
    Bun.sleep(ms).then(() => ({ outcome: 'still waiting' as const })),
  ])

test('a statement sent as its connection is reset is answered, not left waiting, and the pool recovers', async () => {
  const sql = createSql(proxyUrl, { max: 1, applicationName: 'taskcast-test-reset' })
  await sql`select 1`
  const running = sql`select pg_sleep(5)`
  // Sent the moment the running statement fails, before the pool has seen its connection close:
  // it goes out on the same, broken connection.
  const sentAsItBreaks = running.then(() => undefined, () => sql`select 1`)
  for (const socket of clientSockets) socket.resetAndDestroy()

  const first = await settleWithin(running, 5000)
  expect(first.outcome).toBe('rejected')
  // It fails as the connection does (or, were the close seen first, runs on a new connection).
  const next = await settleWithin(sentAsItBreaks, 5000)
  expect(next.outcome).not.toBe('still waiting')
  if (next.outcome === 'rejected') expect(isConnectionError(next.error)).toBe(true)

  const [row] = await sql`select 2 as two`
  expect(row).toEqual({ two: 2 })
  expect((await settleWithin(sql.end(), 5000)).outcome).toBe('resolved')
}, 20_000)

test('a pool whose connection was reset mid-statement ends at once', async () => {
  const sql = createSql(proxyUrl, { max: 1, applicationName: 'taskcast-test-reset' })
  await sql`select 1`
  const running = settleWithin(sql`select pg_sleep(5)`, 5000)
  for (const socket of clientSockets) socket.resetAndDestroy()
  expect((await running).outcome).toBe('rejected')
  expect((await settleWithin(sql.end(), 3000)).outcome).toBe('resolved')
}, 20_000)
