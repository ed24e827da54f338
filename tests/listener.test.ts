import { afterAll, expect, test } from 'bun:test'
import type { Socket, TCPSocketListener } from 'bun'
import { createListener } from '../db/listener.ts'
import { testDb } from './support/database.ts'
import { quietLog, uniqueName, until } from './support/fixtures.ts'

/**
 * A TCP proxy in front of PostgreSQL that can stall: its open connections stop carrying bytes
 * while the sockets stay open, as behind a dead NAT entry or a hung middlebox. TCP notices
 * nothing; only a query that never answers does.
 */
interface Link {
  upstream?: Socket<unknown>
  pending: Uint8Array[]
  stalled: boolean
}

function stallingProxy(target: URL) {
  let stalled = false
  const open = new Set<Socket<Link>>()
  const server: TCPSocketListener<Link> = Bun.listen<Link>({
    hostname: '127.0.0.1',
    port: 0,
    data: { pending: [], stalled: false },
    socket: {
      open(client) {
        client.data = { pending: [], stalled: false }
        open.add(client)
        void Bun.connect({
          hostname: target.hostname,
          port: Number(target.port),
          socket: {
            data(_upstream, bytes) {
              if (!client.data.stalled) client.write(bytes)
            },
            close() {
              client.end()
            },
          },
        }).then((upstream) => {
          client.data.upstream = upstream
          for (const bytes of client.data.pending) upstream.write(bytes)
        })
      },
      data(client, bytes) {
        if (client.data.stalled) return
        if (client.data.upstream) client.data.upstream.write(bytes)
        else client.data.pending.push(new Uint8Array(bytes))
      },
      close(client) {
        open.delete(client)
        client.data.upstream?.end()
      },
    },
  })
  return {
    url: (() => {
      const url = new URL(target)
      url.port = String(server.port)
      return url.toString()
    })(),
    /** From now on, the connections already open carry nothing; new ones work. */
    stallOpenConnections() {
      for (const client of open) client.data.stalled = true
      stalled = true
    },
    get stalled() {
      return stalled
    },
    stop: () => server.stop(true),
  }
}

const proxies: Array<{ stop(): void }> = []
afterAll(() => proxies.forEach((proxy) => proxy.stop()))

test('a stalled (half-open) LISTEN connection is noticed by its health check and replaced', async () => {
  const proxy = stallingProxy(new URL(testDb().url))
  proxies.push(proxy)
  const channel = uniqueName('stall').replaceAll('-', '_')
  const received: string[] = []
  let connects = 0
  const listener = createListener({ url: proxy.url, applicationName: 'taskcast-test-stall', log: quietLog, healthCheckMs: 1000 })
  listener.on(channel, (payload) => received.push(payload))
  listener.onConnected(() => connects++)
  await listener.start()
  try {
    await testDb().sql`select pg_notify(${channel}, 'before')`
    await until(() => received.includes('before'), 5000, 'the first notification')

    proxy.stallOpenConnections()
    const stalledAt = Date.now()
    await testDb().sql`select pg_notify(${channel}, 'lost in the stall')`
    // The health check (every 1 s here, 10 s by default) times out and the listener reconnects.
    await until(() => connects >= 2, 15_000, 'the listener to reconnect')
    const detectedMs = Date.now() - stalledAt
    await testDb().sql`select pg_notify(${channel}, 'after')`
    await until(() => received.includes('after'), 5000, 'a notification after the reconnect')
    expect(received).not.toContain('lost in the stall')
    console.log(`stalled LISTEN connection replaced after ${detectedMs} ms (health check every 1 s)`)
  } finally {
    await listener.stop()
  }
}, 30_000)

test('an on-demand channel is listened to only between listen() and unlisten(), after a reconnect too', async () => {
  const proxy = stallingProxy(new URL(testDb().url))
  proxies.push(proxy)
  const { sql } = testDb()
  const channel = uniqueName('demand').replaceAll('-', '_')
  const always = uniqueName('always').replaceAll('-', '_')
  const onDemand: string[] = []
  const marks: string[] = []
  let connects = 0
  const listener = createListener({ url: proxy.url, applicationName: 'taskcast-test-demand', log: quietLog, healthCheckMs: 1000 })
  listener.on(channel, (payload) => onDemand.push(payload), { onDemand: true })
  listener.on(always, (payload) => marks.push(payload))
  listener.onConnected(() => connects++)
  /** Notifies `channel`, then the channel always listened to: once the mark arrives, so has the first, if it was listened to. */
  const notify = async (payload: string) => {
    await sql`select pg_notify(${channel}, ${payload})`
    await sql`select pg_notify(${always}, ${payload})`
    await until(() => marks.includes(payload), 5000, `the mark after ${payload}`)
  }
  await listener.start()
  try {
    await notify('before listen')
    expect(onDemand).toEqual([])

    await listener.listen(channel)
    await notify('while listened')
    expect(onDemand).toEqual(['while listened'])

    proxy.stallOpenConnections()
    await until(() => connects >= 2, 15_000, 'the listener to reconnect')
    await notify('after the reconnect')
    expect(onDemand).toEqual(['while listened', 'after the reconnect'])

    await listener.unlisten(channel)
    await notify('after unlisten')
    expect(onDemand).toEqual(['while listened', 'after the reconnect'])
  } finally {
    await listener.stop()
  }
}, 30_000)
