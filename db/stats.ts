import type { Sql } from './client.ts'

export interface QueueStat {
  queue: string
  status: 'queued' | 'running'
  count: number
  /** Seconds the oldest runnable queued task has waited past its run_at (queued rows only). */
  oldestSeconds: number | null
}

/** Unfinished tasks by queue and status; served by the partial indexes over queued and running rows. */
export async function queueStats(sql: Sql): Promise<QueueStat[]> {
  return sql<QueueStat[]>`
    select queue, status, count(*)::int as count,
           extract(epoch from now() - min(run_at) filter (where status = 'queued' and run_at <= now()))::float8
             as oldest_seconds
    from taskcast.tasks
    where status in ('queued', 'running')
    group by queue, status`
}

/** How full PostgreSQL's NOTIFY queue is, from 0 to 1; near 1, NOTIFY starts failing. */
export async function notificationQueueUsage(sql: Sql): Promise<number> {
  const [row] = await sql<{ usage: number }[]>`select pg_notification_queue_usage()::float8 as usage`
  return row!.usage
}
