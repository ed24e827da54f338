import { metrics, type BatchObservableCallback } from '@opentelemetry/api'
import type { Sql } from '../db/client.ts'
import type { Listener } from '../db/listener.ts'
import { notificationQueueUsage, queueStats } from '../db/stats.ts'
import type { Logger } from '../observability/log.ts'
import type { EventHub } from './hub.ts'

export interface ApiMetrics {
  /** Counts tasks accepted by POST /v1/tasks and /v1/tasks/batch. */
  submitted(tasks: ReadonlyArray<{ type: string; queue: string }>): void
  /** Stops reporting this app's gauges (its hub and listener are gone). */
  close(): void
}

/**
 * The API's metrics: tasks submitted; and, read when /metrics is scraped, queue depth and oldest
 * waiting age per queue, PostgreSQL's NOTIFY queue usage, open SSE streams and the health of the
 * LISTEN connection. A scrape while the database is down still answers, without the database's
 * figures.
 */
export function createApiMetrics({ sql, hub, listener, log }: { sql: Sql; hub: EventHub; listener: Listener; log: Logger }): ApiMetrics {
  const meter = metrics.getMeter('taskcast-api')
  const submitted = meter.createCounter('taskcast.tasks.submitted', { description: 'Tasks accepted by the API' })
  const depth = meter.createObservableGauge('taskcast.queue.depth', { description: 'Unfinished tasks by queue and status' })
  const oldest = meter.createObservableGauge('taskcast.queue.oldest_age_seconds', {
    description: 'How long the oldest runnable queued task has waited, by queue', unit: 's',
  })
  const notifyUsage = meter.createObservableGauge('taskcast.pg.notification_queue_usage', {
    description: 'Fraction of PostgreSQL\'s NOTIFY queue in use (pg_notification_queue_usage)',
  })
  const streams = meter.createObservableGauge('taskcast.sse.streams', { description: 'Open SSE streams in this process' })
  const connected = meter.createObservableGauge('taskcast.listen.connected', { description: '1 while the LISTEN connection is up' })
  const reconnects = meter.createObservableCounter('taskcast.listen.reconnects', { description: 'LISTEN connection losses recovered' })

  const observables = [depth, oldest, notifyUsage, streams, connected, reconnects]
  const observe: BatchObservableCallback = async (result) => {
    result.observe(streams, hub.size)
    result.observe(connected, listener.connected ? 1 : 0)
    result.observe(reconnects, listener.reconnects)
    try {
      const [stats, usage] = await Promise.all([queueStats(sql), notificationQueueUsage(sql)])
      for (const stat of stats) {
        result.observe(depth, stat.count, { queue: stat.queue, status: stat.status })
        if (stat.status === 'queued') result.observe(oldest, stat.oldestSeconds ?? 0, { queue: stat.queue })
      }
      result.observe(notifyUsage, usage)
    } catch (error) {
      log.warn({ err: error }, 'metrics: could not read queue figures')
    }
  }
  meter.addBatchObservableCallback(observe, observables)

  return {
    submitted(tasks) {
      // One add per type and queue: a batch of 1,000 alike tasks is one add, not 1,000.
      const counts = new Map<string, { type: string; queue: string; n: number }>()
      for (const { type, queue } of tasks) {
        const key = `${type}\u0000${queue}`
        const entry = counts.get(key)
        if (entry) entry.n++
        else counts.set(key, { type, queue, n: 1 })
      }
      for (const { type, queue, n } of counts.values()) submitted.add(n, { type, queue })
    },
    close() {
      meter.removeBatchObservableCallback(observe, observables)
    },
  }
}
