-- A worker's lock (0008) says its process has a connection, not that the process runs: one that is
-- stopped (SIGSTOP, a frozen VM) or whose event loop is stuck keeps its connection and its lock,
-- and was handed tasks until their lease ran out. Each worker now renews alive_until every second
-- from its event loop; a submission hands tasks only to workers whose lock is held and whose
-- alive_until is ahead.
alter table taskcast.workers add column alive_until timestamptz not null default now();
