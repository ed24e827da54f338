-- valid_progress() guards the progress of tasks and of progress events in CHECK constraints.
-- Written in SQL, PostgreSQL inlined it into each constraint as every statement writing either
-- table began: it parsed and analysed the function's text again each time, ~70-90 µs of a
-- statement's ~420 µs on a one-task insert, whether or not any row had progress. In PL/pgSQL it
-- is compiled once per connection and runs only for rows that have progress. Same rule.
create or replace function taskcast.valid_progress(p jsonb) returns boolean
language plpgsql immutable as $$
begin
  return case
    when jsonb_typeof(p) <> 'object' then false
    when p -> 'percent' is null or jsonb_typeof(p -> 'percent') = 'null' then true
    when jsonb_typeof(p -> 'percent') <> 'number' then false
    else (p ->> 'percent')::numeric between 0 and 100
  end;
end
$$;
