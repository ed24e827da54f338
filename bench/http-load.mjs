/**
 * The HTTP load of the ingest and end-to-end workloads: `connections` keep-alive connections, each
 * POSTing one request at a time for `seconds`, with autocannon on Node. It spends ~45 µs of CPU a
 * request here, where loops of Bun's fetch spent ~65, on the two cores the services under test
 * share with it. Argument: one JSON object ({ url, key, path, body, tasksPerRequest, seconds,
 * connections }); prints one JSON line: tasks/s, tasks, errors, and each request's p50/p99 in ms.
 */
import autocannon from 'autocannon'
import { percentile } from './peers/measure.mjs'

const args = JSON.parse(process.argv[2] ?? '{}')
const latencies = []
const instance = autocannon({
  url: `${args.url}${args.path}`,
  method: 'POST',
  headers: { authorization: `Bearer ${args.key}`, 'content-type': 'application/json' },
  body: JSON.stringify(args.body),
  connections: args.connections,
  duration: args.seconds,
})
instance.on('response', (_client, statusCode, _bytes, responseTime) => {
  if (statusCode === 202) latencies.push(responseTime)
})
const result = await instance

const accepted = latencies.length
const tasks = accepted * args.tasksPerRequest
console.log(JSON.stringify({
  tasksPerSecond: tasks / result.duration,
  tasks,
  errors: result.non2xx + result.errors + result.timeouts,
  p50: percentile(latencies, 50),
  p99: percentile(latencies, 99),
}))
