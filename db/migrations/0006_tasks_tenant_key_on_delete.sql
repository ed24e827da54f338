-- Every task insert looked its tenant up through the foreign key on tasks.tenant_id, once per
-- row: 15-20 % of the backend's CPU for an insert of 1 or of 20 tasks. Taskcast inserts tasks
-- only for the tenant of an API key it has just authenticated, and never deletes tenants; the
-- constraint's other duty, deleting a tenant's tasks with it, moves to a trigger on tenants,
-- which now deletes their events too (they lost their own foreign key in 0003).
alter table taskcast.tasks drop constraint tasks_tenant_id_fkey;

create function taskcast.delete_tenant_tasks() returns trigger
language plpgsql as $$
begin
  delete from taskcast.task_events where tenant_id = old.id;
  delete from taskcast.tasks where tenant_id = old.id;
  return old;
end
$$;

create trigger delete_tenant_tasks before delete on taskcast.tenants
for each row execute function taskcast.delete_tenant_tasks();
