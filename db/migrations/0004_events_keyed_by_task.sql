-- Each event was written into three indexes: the id primary key, (task_id, seq) and (tenant_id, id).
-- Every read goes through the last two (a task's stream by seq, a tenant's by id); nothing looks an
-- event up by its id alone. (task_id, seq) becomes the primary key and the id index goes: one index
-- fewer for each of a task's events. Ids still come from the identity sequence. On a large log the
-- (task_id, seq) index is built anew, with the table locked meanwhile.
alter table taskcast.task_events
  drop constraint task_events_pkey,
  drop constraint task_events_task_id_seq_key,
  add primary key (task_id, seq);
