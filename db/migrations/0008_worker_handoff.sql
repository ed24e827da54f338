-- Workers waiting for work. A submission of one task that finds one here, alive and with a free
-- slot, starts the task's attempt under that worker's lease in its own insert and tells the worker
-- on its channel, so the worker runs it without a claim round trip (see taskInsert).
create table taskcast.workers (
  id text primary key,
  queues text[] not null,
  -- Tasks it would start at once. The worker sets it when it claims and when tasks end (0 while its
  -- queues may hold more than it can take); each hand-off takes one.
  free int not null default 0,
  lease_seconds int not null check (lease_seconds > 0),
  -- Its hand-off NOTIFY channel.
  channel text not null,
  -- The worker holds the advisory lock (worker_lock_class, lock_key) on a connection of its own
  -- while it lives; a submission hands tasks only to workers whose lock is held.
  lock_key int not null unique
);
