import { metrics, type BatchObservableCallback } from '@opentelemetry/api'
import type { Listener } from '../db/listener.ts'
import type { ClaimedTask } from '../db/task-leases.ts'
import type { RunEnd } from './run.ts'

// Seconds, from a millisecond pickup to an hour-long run.
const secondsBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]
const terminal: Partial<Record<RunEnd, string>> = { succeeded: 'succeeded', failed: 'failed', canceled: 'canceled' }

export interface WorkerMetrics {
  claimed(task: ClaimedTask): void
  ended(task: ClaimedTask, end: RunEnd, seconds: number): void
  /** Stops reporting this worker's gauges (its listener is gone). */
  close(): void
}

/**
 * A worker's metrics: time from enqueue (or run_at) to start, run duration by outcome, tasks
 * completed by type and status, tasks running, and the health of its LISTEN connection.
 */
export function createWorkerMetrics({ listener, running }: { listener: Listener; running: () => number }): WorkerMetrics {
  const meter = metrics.getMeter('taskcast-worker')
  const wait = meter.createHistogram('taskcast.task.wait_seconds', {
    description: 'From when a task could run (enqueued, retry due, run_at) to when an attempt started', unit: 's',
    advice: { explicitBucketBoundaries: secondsBuckets },
  })
  const duration = meter.createHistogram('taskcast.task.duration_seconds', {
    description: 'Run time of an attempt, by type and outcome', unit: 's',
    advice: { explicitBucketBoundaries: secondsBuckets },
  })
  const completed = meter.createCounter('taskcast.tasks.completed', { description: 'Tasks that reached a final status, by type and status' })
  const active = meter.createObservableGauge('taskcast.tasks.running', { description: 'Tasks this worker is running' })
  const connected = meter.createObservableGauge('taskcast.listen.connected', { description: '1 while the LISTEN connection is up' })
  const reconnects = meter.createObservableCounter('taskcast.listen.reconnects', { description: 'LISTEN connection losses recovered' })
  const observables = [active, connected, reconnects]
  const observe: BatchObservableCallback = (result) => {
    result.observe(active, running())
    result.observe(connected, listener.connected ? 1 : 0)
    result.observe(reconnects, listener.reconnects)
  }
  meter.addBatchObservableCallback(observe, observables)

  return {
    claimed(task) {
      if (task.startedAt) wait.record(Math.max(0, (task.startedAt.getTime() - task.runAt.getTime()) / 1000), { type: task.type, queue: task.queue })
    },
    ended(task, end, seconds) {
      duration.record(seconds, { type: task.type, outcome: end })
      const status = terminal[end]
      if (status) completed.add(1, { type: task.type, status })
    },
    close() {
      meter.removeBatchObservableCallback(observe, observables)
    },
  }
}
