import type { Sql } from './client.ts'
import { taskGet, taskInsert, type NewTask, type TaskRow } from './tasks.ts'

export type IdempotentInsert =
  | { outcome: 'created' | 'replayed'; task: TaskRow }
  | { outcome: 'conflict' }

/**
 * Inserts a task under an Idempotency-Key. Within 24 hours, the same key and request hash return
 * the task the key first created; the same key with another request is a conflict. The key is
 * claimed with an insert on its primary key, not a read first: of concurrent identical requests,
 * one inserts and the others wait for it to commit, then find its task.
 */
export async function taskInsertIdempotent(
  sql: Sql,
  key: string,
  requestHash: Buffer,
  task: NewTask,
): Promise<IdempotentInsert> {
  return sql.begin(async (tx) => {
    const [claimed] = await tx`
      insert into taskcast.idempotency_keys (tenant_id, key, request_hash, task_id)
      values (${task.tenantId}, ${key}, ${requestHash}, ${task.id})
      on conflict (tenant_id, key) do update
        set request_hash = excluded.request_hash, task_id = excluded.task_id, created_at = now()
        where idempotency_keys.created_at < now() - interval '24 hours'
      returning task_id`
    if (claimed) {
      const [created] = await taskInsert(tx, [task])
      return { outcome: 'created', task: created! } as const
    }
    const [existing] = await tx<{ requestHash: Buffer; taskId: string }[]>`
      select request_hash, task_id from taskcast.idempotency_keys
      where tenant_id = ${task.tenantId} and key = ${key}`
    if (!existing || !existing.requestHash.equals(requestHash)) return { outcome: 'conflict' } as const
    const first = await taskGet(tx, task.tenantId, existing.taskId)
    return first ? { outcome: 'replayed', task: first } as const : { outcome: 'conflict' } as const
  })
}

/** Deletes keys past their 24-hour window, a batch at a time. */
export async function idempotencyKeysPrune(sql: Sql, limit = 1000): Promise<number> {
  const deleted = await sql`
    delete from taskcast.idempotency_keys
    where ctid = any(array(
      select ctid from taskcast.idempotency_keys
      where created_at < now() - interval '24 hours'
      limit ${limit}))`
  return deleted.count
}
