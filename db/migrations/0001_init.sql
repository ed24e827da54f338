-- Taskcast schema: tenants and their API keys, tasks (the queue) and the append-only event log.
create schema if not exists taskcast;

-- A progress value: an object whose optional "percent" is a number from 0 to 100.
create function taskcast.valid_progress(p jsonb) returns boolean
language sql immutable as $$
  select case
    when jsonb_typeof(p) <> 'object' then false
    when p -> 'percent' is null or jsonb_typeof(p -> 'percent') = 'null' then true
    when jsonb_typeof(p -> 'percent') <> 'number' then false
    else (p ->> 'percent')::numeric between 0 and 100
  end
$$;

create table taskcast.tenants (
  id         uuid primary key,
  name       text not null unique check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
  created_at timestamptz not null default now()
);

-- Only a SHA-256 of each key is kept; keys carry 256 random bits, so no salt or slow hash is needed.
create table taskcast.api_keys (
  id         uuid primary key,
  tenant_id  uuid not null references taskcast.tenants (id) on delete cascade,
  key_hash   bytea not null unique check (length(key_hash) = 32),
  prefix     text not null,
  created_at timestamptz not null default now(),
  revoked_at timestamptz
);

create table taskcast.tasks (
  id               uuid primary key,                     -- UUIDv7: time-ordered, so it doubles as the list order
  tenant_id        uuid not null references taskcast.tenants (id) on delete cascade,
  type             text not null,
  queue            text not null check (queue ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  status           text not null default 'queued'
                   check (status in ('queued', 'running', 'succeeded', 'failed', 'canceled')),
  priority         smallint not null default 0 check (priority between -100 and 100),
  payload          jsonb not null default '{}',
  result           jsonb,
  error            jsonb,
  progress         jsonb check (progress is null or taskcast.valid_progress(progress)),
  attempt          integer not null default 0 check (attempt >= 0),
  max_attempts     integer not null check (max_attempts between 1 and 100),
  timeout_seconds  integer not null check (timeout_seconds between 1 and 604800),
  run_at           timestamptz not null default now(),
  created_at       timestamptz not null default now(),
  started_at       timestamptz,
  finished_at      timestamptz,
  cancel_requested boolean not null default false,
  traceparent      text,
  tracestate       text,
  locked_by        text,                                 -- the worker holding the lease while running
  lease_until      timestamptz,
  last_seq         integer not null default 0,           -- seq of the task's latest event
  check ((status in ('succeeded', 'failed', 'canceled')) = (finished_at is not null)),
  check ((status = 'running') = (locked_by is not null and lease_until is not null)),
  check (status = 'queued' or attempt > 0 or status = 'canceled')
);

-- The claim query reads only this index: queued rows by queue, highest priority, then oldest run_at.
-- Partial, so it stays as small as the backlog however many tasks have finished.
create index tasks_claim_idx on taskcast.tasks (queue, priority desc, run_at, id) where status = 'queued';
-- Listing, newest first per tenant; and the same filtered by status (the failed ones are the dead-letter set).
create index tasks_tenant_idx on taskcast.tasks (tenant_id, id desc);
create index tasks_tenant_status_idx on taskcast.tasks (tenant_id, status, id desc);
-- Expired leases, for the sweeper.
create index tasks_lease_idx on taskcast.tasks (lease_until) where status = 'running';

-- Append-only: every status change and persisted progress report of a task, in order.
-- seq numbers one task's events 1, 2, 3… (the task stream's event id); id is global (the tenant stream's).
create table taskcast.task_events (
  id         bigint generated always as identity primary key,
  task_id    uuid not null references taskcast.tasks (id) on delete cascade,
  tenant_id  uuid not null,
  seq        integer not null check (seq > 0),
  kind       text not null check (kind in ('status', 'progress')),
  data       jsonb not null,
  created_at timestamptz not null default now(),
  unique (task_id, seq),
  check (kind <> 'progress' or taskcast.valid_progress(data)),
  check (kind <> 'status' or data ->> 'status' in ('queued', 'running', 'succeeded', 'failed', 'canceled'))
);
create index task_events_tenant_idx on taskcast.task_events (tenant_id, id);
