/**
 * The latency workloads' HTTP clients for `bun run bench`, run as a process of its own so that the
 * runner's work does not share its event loop (the throughput workloads' load is
 * bench/http-load.ts). Argument: one JSON object; prints one JSON line with what it measured.
 * Requests are written on kept-alive sockets and streams read off sockets of their own
 * (bench/http1.ts), not through fetch, whose HTTP thread would add its hand-offs to what is timed.
 *
 *   paced    one task every `intervalMs` for `seconds`, not waiting for answers; sends back each
 *            task id with the time its request was sent
 *   progress submits `tasks` demo.noop tasks reporting progress, follows each one's stream and
 *            times each progress event from its report (the message) to its arrival here
 *
 * The latency modes (paced, progress) first run the same load for `warmupSeconds`, unmeasured, as
 * the peers' do: they measure an idle worker's steady state, not the first requests after its
 * process started (new connections, code not yet compiled).
 */
import { createParser } from 'eventsource-parser'
import { eventStream, KeptAlive, requestBytes } from './http1.ts'
import { preciseNow, quantile } from './services.ts'

interface Args {
  mode: 'paced' | 'progress'
  url: string
  key: string
  queue: string
  seconds: number
  intervalMs: number
  tasks: number
  reports: number
  warmupSeconds: number
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args
const target = new URL(args.url)
const authorization = { Authorization: `Bearer ${args.key}` }
const noop = (extra: Record<string, unknown> = {}) => ({ type: 'demo.noop', queue: args.queue, payload: {}, ...extra })
const connections = new KeptAlive(target)

/**
 * One task every `intervalMs` for `seconds`; each task's id with the time its request was sent, and
 * whether the answer said it was handed straight to a worker (`running`).
 */
async function paced(seconds: number) {
  const request = requestBytes('POST', target, '/v1/tasks', authorization, noop())
  const sent: Array<Promise<{ id: string; sentAt: number; handedOff: boolean } | undefined>> = []
  const started = performance.now()
  for (let i = 0; performance.now() - started < seconds * 1000; i++) {
    const due = started + i * args.intervalMs
    const wait = due - performance.now()
    if (wait > 0) await Bun.sleep(wait)
    const sentAt = preciseNow()
    sent.push(connections.send(request).then(({ status, body }) => {
      if (status !== 202 || body === null) return undefined
      const task = JSON.parse(body) as { id: string; status: string }
      return { id: task.id, sentAt, handedOff: task.status === 'running' }
    }))
  }
  const tasks = (await Promise.all(sent)).filter((task) => task !== undefined)
  return { tasks, errors: sent.length - tasks.length }
}

/** Runs `tasks` tasks reporting `reports` times each, following their streams: each report's delay. */
async function progress(reports: number) {
  const delays: number[] = []
  await Promise.all(Array.from({ length: args.tasks }, async () => {
    const submission = noop({ payload: { reports, intervalMs: args.intervalMs } })
    const { status: submitted, body } = await connections.send(requestBytes('POST', target, '/v1/tasks', authorization, submission))
    if (submitted !== 202 || body === null) throw new Error(`a submission answered ${submitted}`)
    const task = JSON.parse(body) as { links: { events: string } }
    const parser = createParser({
      onEvent(event) {
        const arrived = preciseNow()
        if (event.event !== 'progress') return
        const reported = Number((JSON.parse(event.data) as { message?: string }).message)
        if (Number.isFinite(reported)) delays.push(arrived - reported)
      },
    })
    const status = await eventStream(target, task.links.events, (text) => parser.feed(text))
    if (status !== 200) throw new Error(`the task's stream answered ${status}`)
  }))
  return delays
}

const modes = {
  paced: async () => {
    await paced(args.warmupSeconds)
    return paced(args.seconds)
  },
  progress: async () => {
    await progress(Math.ceil((args.warmupSeconds * 1000) / args.intervalMs))
    const delays = await progress(args.reports)
    return { events: delays.length, p50: quantile(delays, 0.5), p99: quantile(delays, 0.99) }
  },
}

console.log(JSON.stringify(await modes[args.mode]()))
process.exit(0)
