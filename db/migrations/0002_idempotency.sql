-- Idempotency-Key: the first task a (tenant, key) created, and a hash of the request that made it.
-- The primary key makes concurrent identical requests safe: one insert wins, the others wait
-- for it and then find its row. Keys older than 24 hours may be reused and are pruned.
create table taskcast.idempotency_keys (
  tenant_id    uuid not null references taskcast.tenants (id) on delete cascade,
  key          text not null check (length(key) between 1 and 255),
  request_hash bytea not null check (length(request_hash) = 32),
  -- Deferred: the key is claimed first, then its task inserted, in one transaction.
  task_id      uuid not null references taskcast.tasks (id) on delete cascade deferrable initially deferred,
  created_at   timestamptz not null default now(),
  primary key (tenant_id, key)
);
create index idempotency_keys_created_idx on taskcast.idempotency_keys (created_at);
