/**
 * The recurring dispatcher applies the booking rules (sql/0019): each occurrence
 * is checked by private.slot_problem, the function every other door asks,
 * inlined into the set-based query; a recurrence is priced at the rate of its own
 * length; each session keeps the specialist's buffer (blocked_until), also
 * between occurrences of one batch. Otherwise as in sql/0015.
 */

create or replace function private.dispatch_recurring_bookings(
  run_at timestamptz default now(),
  horizon_days integer default null, -- null: practice_settings.dispatch_horizon_days
  with_calendar boolean default false -- give new sessions an event id to create
) returns table (outcome text, recurring_id uuid, session_id uuid, occurrence_date date, error text)
  language plpgsql
  security definer
  set search_path = ''
  -- Row estimates of generate_series over table columns are guesses (1,000 per
  -- call), which would make every statement here JIT-compile for ~0.7 s in vain.
  set jit = off
  as $$
declare
  horizon date := (run_at at time zone 'UTC')::date
                  + coalesce(horizon_days, (private.practice_settings()).dispatch_horizon_days);
  started timestamptz := clock_timestamp();
begin
  -- One dispatch at a time; a second concurrent run waits, then finds nothing due.
  perform pg_advisory_xact_lock(hashtextextended('private.dispatch_recurring_bookings', 0));
  if not exists (select 1 from public.recurring_bookings r where r.is_active and r.next_booking_date <= horizon) then
    return; -- nothing due (most days for most recurrences, and every second run)
  end if;
  -- Bulk writes: the statement serializes itself (the lock above) instead of
  -- taking per-party locks row by row, and sets updated_at itself.
  perform set_config('app.bulk_session_insert', 'on', true);
  drop table if exists pg_temp.dispatch_due; -- a second run in one transaction
  drop table if exists pg_temp.dispatch_occurrences;

  -- Every due recurrence, with what its sessions need and the date it moves on to.
  create temporary table dispatch_due on commit drop as
  select d.*,
         case
           when d.last_date < d.start_date then d.start_date
           when d.step_days is not null
             then d.start_date + d.step_days * ((d.last_date - d.start_date) / d.step_days + 1)
           -- Monthly: the occurrence in last_date's month, or the one after it.
           when (d.start_date + make_interval(months => d.last_month))::date > d.last_date
             then (d.start_date + make_interval(months => d.last_month))::date
           else (d.start_date + make_interval(months => d.last_month + 1))::date
         end as next_date
  from (
    select r.id, r.user_id, r.specialist_id, r.start_date, r.start_time, r.timezone as zone,
           coalesce(r.duration_minutes, private.default_length(r.specialist_id, run_at)) as minutes,
           rate.amount, rate.currency, coalesce(sp.buffer_minutes, 0) as buffer,
           case r.frequency when 'weekly' then 7 when 'biweekly' then 14 end as step_days,
           -- From the next date due, but nothing dated before the recurrence existed.
           greatest(r.next_booking_date, (r.created_at at time zone r.timezone)::date) as first_date,
           least(horizon, r.end_date) as last_date,
           (extract(year from least(horizon, r.end_date))::int - extract(year from r.start_date)::int) * 12
             + extract(month from least(horizon, r.end_date))::int - extract(month from r.start_date)::int
             as last_month
    from public.recurring_bookings r
    join public.profiles sp on sp.id = r.specialist_id
    -- The rate of the recurrence's length (none: the rules report it, nothing is made).
    left join public.specialist_rates rate
      on rate.specialist_id = r.specialist_id and rate.effective_from <= run_at
     and (rate.effective_to is null or rate.effective_to > run_at)
     and rate.duration_minutes = coalesce(r.duration_minutes, private.default_length(r.specialist_id, run_at))
    where r.is_active and r.next_booking_date <= horizon
  ) d;
  started := private.dispatch_step_done('due recurrences', started);

  -- Every occurrence from first_date to last_date, with what stops it, if anything.
  create temporary table dispatch_occurrences on commit drop as
  select o.*,
         case
           when o.starts_at <= run_at then 'missed: the occurrence was already past when dispatched'
           -- The booking rules (sql/0019), the same function every door asks, inlined here.
           else (select p.message
                 from private.slot_problem(o.specialist_id, o.client_id, o.starts_at, o.ends_at, null, run_at) p)
         end as problem,
         false as contended
  from (
    select occ.recurring_id, occ.occurrence_date, d.user_id as client_id, d.specialist_id,
           s.starts_at, s.starts_at + make_interval(mins => d.minutes) as ends_at,
           s.starts_at + make_interval(mins => d.minutes + d.buffer) as blocked_until,
           d.amount, d.currency, gen_random_uuid() as new_session_id
    from dispatch_due d
    cross join lateral (
      -- Weekly and biweekly: start + step·k for the k between first_date and last_date.
      select d.id as recurring_id, d.start_date + d.step_days * k as occurrence_date
      from generate_series(
             (greatest(d.first_date - d.start_date, 0) + d.step_days - 1) / d.step_days,
             case when d.last_date >= d.start_date then (d.last_date - d.start_date) / d.step_days else -1 end) k
      where d.step_days is not null
      union all
      -- Monthly: start + k months for the months between first_date and last_date.
      select d.id, m.day
      from generate_series(
             greatest(0, (extract(year from d.first_date)::int - extract(year from d.start_date)::int) * 12
                         + extract(month from d.first_date)::int - extract(month from d.start_date)::int - 1),
             d.last_month) k,
           lateral (select (d.start_date + make_interval(months => k))::date as day) m
      where d.step_days is null and m.day between d.first_date and d.last_date
    ) occ
    cross join lateral (select private.local_instant(occ.occurrence_date + d.start_time, d.zone) as starts_at) s
    -- Occurrences already made (a re-run, or made earlier) are neither created nor reported.
    where not exists (select 1 from public.sessions made
                      where made.recurring_booking_id = occ.recurring_id
                        and made.occurrence_date = occ.occurrence_date)
  ) o;
  started := private.dispatch_step_done('occurrences and their checks', started);

  -- Recurrences that overlap each other (same specialist or same client) in this
  -- batch: those rows go in one by one below, in a fixed order, first come first served.
  update dispatch_occurrences o set contended = true
  from (
    select w.new_session_id
    from (
      select c.new_session_id,
             coalesce(max(c.blocked_until) over by_specialist_before > c.starts_at, false)
             or coalesce(lead(c.starts_at) over by_specialist < c.blocked_until, false)
             or coalesce(max(c.ends_at) over by_client_before > c.starts_at, false)
             or coalesce(lead(c.starts_at) over by_client < c.ends_at, false) as overlaps
      from dispatch_occurrences c
      where c.problem is null
      window by_specialist as (partition by c.specialist_id order by c.starts_at, c.new_session_id),
             by_specialist_before as (by_specialist rows between unbounded preceding and 1 preceding),
             by_client as (partition by c.client_id order by c.starts_at, c.new_session_id),
             by_client_before as (by_client rows between unbounded preceding and 1 preceding)
    ) w
    where w.overlaps
  ) contended
  where o.new_session_id = contended.new_session_id;
  started := private.dispatch_step_done('overlaps within the batch', started);

  -- Everything checked: a plain INSERT, still checked row by row by every constraint.
  begin
    insert into public.sessions (id, specialist_id, client_id, starts_at, ends_at, blocked_until, price, currency,
                                 recurring_booking_id, occurrence_date, session_type, google_calendar_event_id)
    select o.new_session_id, o.specialist_id, o.client_id, o.starts_at, o.ends_at, o.blocked_until, o.amount,
           o.currency,
           o.recurring_id, o.occurrence_date, 'follow_up',
           case when with_calendar then replace(o.new_session_id::text, '-', '') end
    from dispatch_occurrences o
    where o.problem is null and not o.contended;
  exception when exclusion_violation or unique_violation then
    -- Someone booked one of these slots since the checks (booking-create does
    -- not wait for the dispatcher): all of them go in one by one, skipping what conflicts.
    update dispatch_occurrences o set contended = true where o.problem is null;
  end;
  started := private.dispatch_step_done('insert sessions', started);

  if exists (select 1 from dispatch_occurrences o where o.contended) then
    insert into public.sessions (id, specialist_id, client_id, starts_at, ends_at, blocked_until, price, currency,
                                 recurring_booking_id, occurrence_date, session_type, google_calendar_event_id)
    select o.new_session_id, o.specialist_id, o.client_id, o.starts_at, o.ends_at, o.blocked_until, o.amount,
           o.currency,
           o.recurring_id, o.occurrence_date, 'follow_up',
           case when with_calendar then replace(o.new_session_id::text, '-', '') end
    from dispatch_occurrences o
    where o.problem is null and o.contended
    order by o.specialist_id, o.starts_at, o.new_session_id
    on conflict do nothing;

    -- Not created: made meanwhile by someone else (then not reported), or refused by the rules.
    update dispatch_occurrences o
    set problem = coalesce(
      case when exists (select 1 from public.sessions s
                        where s.recurring_booking_id = o.recurring_id and s.occurrence_date = o.occurrence_date)
           then 'already made' end,
      (select p.message
       from private.slot_problem(o.specialist_id, o.client_id, o.starts_at, o.ends_at, null, run_at) p),
      'The specialist already has a session at that time')
    where o.problem is null and o.contended
      and not exists (select 1 from public.sessions s where s.id = o.new_session_id);
    delete from dispatch_occurrences o where o.problem = 'already made';
    started := private.dispatch_step_done('insert overlapping or contested sessions', started);
  end if;

  -- Every due recurrence moves past the horizon (or its end), whatever happened.
  -- Read from the row as it is now: a recurrence ended meanwhile stays ended.
  update public.recurring_bookings r
  set next_booking_date = d.next_date,
      last_generated_date = coalesce(made.last_made, r.last_generated_date),
      is_active = r.is_active and (r.end_date is null or d.next_date <= r.end_date),
      updated_at = now()
  from dispatch_due d
  left join (
    select o.recurring_id, max(o.occurrence_date) as last_made
    from dispatch_occurrences o where o.problem is null group by o.recurring_id
  ) made on made.recurring_id = d.id
  where r.id = d.id;
  started := private.dispatch_step_done('move recurrences on', started);

  return query
    select case when o.problem is null then 'created'
                when o.problem like 'missed:%' then 'missed'
                else 'error' end,
           o.recurring_id,
           case when o.problem is null then o.new_session_id end,
           o.occurrence_date,
           case when o.problem like 'missed:%' then substr(o.problem, 9) else o.problem end
    from dispatch_occurrences o
    order by o.recurring_id, o.occurrence_date;
  started := private.dispatch_step_done('answer', started);
end
$$;
grant execute on function private.dispatch_recurring_bookings(timestamptz, integer, boolean) to service_role;
alter function private.dispatch_recurring_bookings(timestamptz, integer, boolean) set work_mem = '64MB';
