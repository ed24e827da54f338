/**
 * The HTTP load of the ingest and end-to-end workloads: `connections` keep-alive connections, each
 * POSTing one request at a time for `seconds`, with autocannon on Node. It spends ~45 µs of CPU a
 * request here, where loops of Bun's fetch spent ~65, on the two cores the services under test
 * share with it. Argument: one JSON object ({ url, key, path, body, tasksPerRequest, seconds,
 * connections }); prints one JSON line: tasks/s, tasks, errors, and each request's p50/p99 in ms.
 */
import autocannon from 'autocannon'

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

/** As bench/services.ts: the q-quantile, or null when there are none. */
const quantile = (values, q) => {
  if (values.length === 0) return null
  const sorted = Float64Array.from(values).sort()
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]
}
const accepted = latencies.length
const tasks = accepted * args.tasksPerRequest
console.log(JSON.stringify({
  tasksPerSecond: tasks / result.duration,
  tasks,
  errors: result.non2xx + result.errors + result.timeouts,
  p50: quantile(latencies, 0.5),
  p99: quantile(latencies, 0.99),
}))
