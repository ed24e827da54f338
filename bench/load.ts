/**
 * The latency workloads' HTTP clients for `bun run bench`, run as a process of its own so that the
 * runner's work does not share its event loop (the throughput workloads' load is
 * bench/http-load.mjs). Argument: one JSON object; prints one JSON line with what it measured.
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
const headers = { authorization: `Bearer ${args.key}`, 'content-type': 'application/json' }
const noop = (extra: Record<string, unknown> = {}) => ({ type: 'demo.noop', queue: args.queue, payload: {}, ...extra })

function post(path: string, body: unknown) {
  return fetch(`${args.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) })
}

/**
 * One task every `intervalMs` for `seconds`; each task's id with the time its request was sent, and
 * whether the answer said it was handed straight to a worker (`running`).
 */
async function paced(seconds: number) {
  const sent: Array<Promise<{ id: string; sentAt: number; handedOff: boolean } | undefined>> = []
  const started = performance.now()
  for (let i = 0; performance.now() - started < seconds * 1000; i++) {
    const due = started + i * args.intervalMs
    const wait = due - performance.now()
    if (wait > 0) await Bun.sleep(wait)
    const sentAt = preciseNow()
    sent.push(post('/v1/tasks', noop()).then(async (response) => {
      if (response.status !== 202) return undefined
      const task = (await response.json()) as { id: string; status: string }
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
    const response = await post('/v1/tasks', noop({ payload: { reports, intervalMs: args.intervalMs } }))
    const task = (await response.json()) as { links: { events: string } }
    const stream = await fetch(`${args.url}${task.links.events}`)
    const parser = createParser({
      onEvent(event) {
        const arrived = preciseNow()
        if (event.event !== 'progress') return
        const reported = Number((JSON.parse(event.data) as { message?: string }).message)
        if (Number.isFinite(reported)) delays.push(arrived - reported)
      },
    })
    for await (const chunk of stream.body!.pipeThrough(new TextDecoderStream())) parser.feed(chunk)
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
