/**
 * The HTTP load of the ingest and end-to-end workloads: `connections` keep-alive HTTP/1.1
 * connections, each sending one POST at a time for `seconds`, every answer read whole and its
 * status checked. Argument: one JSON object ({ url, key, path, body, tasksPerRequest, seconds,
 * connections }); prints one JSON line: tasks/s, tasks, errors, and each request's p50/p99 in ms.
 *
 * The services under test share the machine's two cores with this client, so what it spends is
 * taken from them. It writes each request as prepared bytes on Bun's sockets and reads only the
 * status line and the body's length: ~10 µs of CPU a request here, where autocannon on Node spent
 * ~45 and loops of Bun's fetch ~65 (as wrk, in C, is used for the same reason).
 */
import type { Socket } from 'bun'
import { answerComplete, readHead, requestBytes, type AnswerHead } from './http1.ts'
import { quantile } from './services.ts'

interface Args {
  url: string
  key: string
  path: string
  body: unknown
  tasksPerRequest: number
  seconds: number
  connections: number
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args
const target = new URL(args.url)
const request = requestBytes('POST', target, args.path, { Authorization: `Bearer ${args.key}` }, args.body)

/** One connection's state: the request it is writing, the answer it is reading. */
interface Connection {
  socket: Socket<Connection> | null
  sentAt: number
  written: number
  received: Buffer
  /** The answer's head, once it is read. */
  head: AnswerHead | null
}

const latencies: number[] = []
let accepted = 0
let errors = 0
let running = 0
let stopping = false
let started = 0
let lastAnswerAt = 0
let allDone: () => void
const done = new Promise<void>((resolve) => (allDone = resolve))

function send(connection: Connection) {
  if (stopping || !connection.socket) return finish(connection)
  connection.sentAt = performance.now()
  connection.written = 0
  connection.received = Buffer.alloc(0)
  connection.head = null
  write(connection)
}

function write(connection: Connection) {
  const wrote = connection.socket!.write(request.subarray(connection.written))
  if (wrote > 0) connection.written += wrote
}

function answered(connection: Connection) {
  const now = performance.now()
  lastAnswerAt = now
  if (connection.head!.status === 202) {
    accepted++
    latencies.push(now - connection.sentAt)
  } else {
    errors++
  }
  if (now - started >= args.seconds * 1000) stopping = true
  send(connection)
}

function finish(connection: Connection) {
  const socket = connection.socket
  connection.socket = null
  socket?.end()
  if (--running === 0) allDone()
}

async function open(connection: Connection) {
  connection.socket = await Bun.connect<Connection>({
    hostname: target.hostname,
    port: Number(target.port),
    data: connection,
    socket: {
      data(socket, chunk) {
        const state = socket.data
        state.received = state.received.length ? Buffer.concat([state.received, chunk]) : Buffer.from(chunk)
        state.head ??= readHead(state.received)
        if (state.head && answerComplete(state.head, state.received)) answered(state)
      },
      drain(socket) {
        if (socket.data.written < request.length) write(socket.data)
      },
      close(socket) {
        const state = socket.data
        if (state.socket === null) return
        // Closed with a request outstanding: an error; go on with a new connection.
        errors++
        state.socket = null
        if (stopping) return void (--running === 0 && allDone())
        void open(state).then(() => send(state), () => void (--running === 0 && allDone()))
      },
      error() {},
    },
  })
}

const connections: Connection[] = Array.from({ length: args.connections }, () => ({
  socket: null, sentAt: 0, written: 0, received: Buffer.alloc(0), head: null,
}))
await Promise.all(connections.map(open))
running = connections.length
started = lastAnswerAt = performance.now()
for (const connection of connections) send(connection)
// An answer still missing 10 s after the run's end counts as an error (a timeout), and ends it.
const watchdog = setTimeout(() => {
  for (const connection of connections) {
    if (!connection.socket) continue
    errors++
    finish(connection)
  }
}, (args.seconds + 10) * 1000)
await done
clearTimeout(watchdog)

const seconds = (lastAnswerAt - started) / 1000
const tasks = accepted * args.tasksPerRequest
console.log(JSON.stringify({
  tasksPerSecond: tasks / seconds,
  tasks,
  errors,
  p50: quantile(latencies, 0.5),
  p99: quantile(latencies, 0.99),
  cpuMicrosPerRequest: Math.round((process.cpuUsage().user + process.cpuUsage().system) / (accepted + errors)),
}))
