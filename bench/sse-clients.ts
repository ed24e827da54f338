/**
 * Many SSE clients for the fan-out workload, in a process of their own. Argument: the path of a
 * JSON file { url, key, taskIds, clients, eventsPerStream, timeoutSeconds }. Opens `clients` task streams,
 * spread evenly over `taskIds`; prints {"message":"connected"} once each has its replay, then
 * times every progress event from its report (the message) to its arrival, and prints
 * {"message":"done", …} once every stream has `eventsPerStream` of them (or at the timeout).
 */
import { createParser } from 'eventsource-parser'
import { preciseNow, quantile } from './services.ts'

interface Args {
  url: string
  key: string
  taskIds: string[]
  clients: number
  eventsPerStream: number
  timeoutSeconds: number
}

const args = (await Bun.file(process.argv[2]!).json()) as Args
const delays: number[] = []
let complete = 0
let connected = 0
let failed = 0
/** Streams that ended, or broke, after they had connected: each one is a client that stopped hearing. */
let dropped = 0
let finish!: () => void
const finished = new Promise<void>((resolve) => (finish = resolve))

async function follow(taskId: string, onReplayed: () => void) {
  const response = await fetch(`${args.url}/v1/tasks/${taskId}/events`, { headers: { authorization: `Bearer ${args.key}` } })
  if (response.status !== 200) throw new Error(`status ${response.status}`)
  let replayed = false
  let received = 0
  const parser = createParser({
    onEvent(event) {
      if (event.event !== 'progress') {
        if (!replayed) (replayed = true, onReplayed())
        return
      }
      const arrived = preciseNow()
      delays.push(arrived - Number((JSON.parse(event.data) as { message: string }).message))
      if (++received === args.eventsPerStream && ++complete === args.clients) finish()
    },
  })
  try {
    for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) parser.feed(chunk)
  } finally {
    if (received < args.eventsPerStream) dropped++
  }
}

// Connect in waves, so 10,000 connections do not all hit the listen backlog at once.
const wave = 250
let allConnected!: () => void
const everyoneConnected = new Promise<void>((resolve) => (allConnected = resolve))
const onReplayed = () => {
  if (++connected + failed === args.clients) allConnected()
}
for (let start = 0; start < args.clients; start += wave) {
  const replays: Promise<void>[] = []
  for (let i = start; i < Math.min(args.clients, start + wave); i++) {
    let replayed!: () => void
    replays.push(new Promise<void>((resolve) => (replayed = resolve)))
    void follow(args.taskIds[i % args.taskIds.length]!, () => (onReplayed(), replayed())).catch(() => {
      failed++
      replayed()
      if (connected + failed === args.clients) allConnected()
    })
  }
  await Promise.all(replays)
}
await everyoneConnected
console.log(JSON.stringify({ message: 'connected', connected, failed }))

await Promise.race([finished, Bun.sleep(args.timeoutSeconds * 1000)])
console.log(JSON.stringify({
  message: 'done',
  connected,
  failed,
  dropped,
  received: delays.length,
  expected: args.clients * args.eventsPerStream,
  p50: quantile(delays, 0.5),
  p99: quantile(delays, 0.99),
}))
process.exit(0)
