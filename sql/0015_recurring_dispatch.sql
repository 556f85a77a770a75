/**
 * The recurring-booking dispatcher, set-based: one call turns every due
 * occurrence of every active recurrence into a session, with no round trip per
 * recurrence.
 *
 * - Occurrences are anchored on start_date: weekly start + 7k days, biweekly
 *   start + 14k days, monthly start + k months (PostgreSQL's calendar
 *   arithmetic clamps to the month's last day: Jan 31 → Feb 28/29 → Mar 31,
 *   never a drift of 30 days).
 * - A session starts at the recurrence's local time in its timezone, so it keeps
 *   that wall-clock time across daylight-saving changes.
 * - Occurrences up to `horizon_days` ahead are created; missed past ones (an
 *   outage) are skipped and reported, never created in the past.
 * - An occurrence that cannot be booked (no current rate, an availability
 *   exception, the specialist or the client already booked) is reported and the
 *   recurrence moves on; end_date is inclusive; past it the recurrence ends.
 * - Idempotent: one session per (recurrence, occurrence date), inserted with
 *   ON CONFLICT DO NOTHING; concurrent runs queue on an advisory lock.
 */

-- ============================================================================
-- Tables
-- ============================================================================

-- Whether the session's calendar event exists yet (the dispatcher creates
-- events after its commit; calendar-sync retries those that failed).
alter table public.sessions add column calendar_synced_at timestamptz;

create index sessions_calendar_unsynced_idx on public.sessions (starts_at)
  where calendar_synced_at is null and google_calendar_event_id is not null and status = 'confirmed';

-- ============================================================================
-- Functions
-- ============================================================================

create or replace function private.dispatch_recurring_bookings(
  run_at timestamptz default now(),
  horizon_days integer default 7,
  with_calendar boolean default false -- give new sessions an event id to create
) returns table (outcome text, recurring_id uuid, session_id uuid, occurrence_date date, error text)
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  today date := (run_at at time zone 'UTC')::date;
  horizon date := today + horizon_days;
begin
  -- One dispatch at a time; a second concurrent run waits, then finds nothing due.
  perform pg_advisory_xact_lock(hashtextextended('private.dispatch_recurring_bookings', 0));
  -- One statement inserts every session: it serializes itself (the lock above)
  -- instead of taking per-party locks row by row.
  perform set_config('app.bulk_session_insert', 'on', true);
  drop table if exists pg_temp.dispatch_occurrences; -- a second run in one transaction

  create temporary table dispatch_occurrences on commit drop as
  with due as (
    select r.*
    from public.recurring_bookings r
    where r.is_active and r.next_booking_date <= horizon
  ),
  steps as (
    select d.*,
           case d.frequency when 'weekly' then 7 when 'biweekly' then 14 end as step_days,
           least(horizon, coalesce(d.end_date, horizon)) as last_date
    from due d
  ),
  occurrences as (
    -- Weekly and biweekly: every step from start_date, from the next date on.
    select s.id as recurring_id, occ::date as occurrence_date
    from steps s,
         generate_series(
           s.start_date + s.step_days * ceil(greatest(s.next_booking_date - s.start_date, 0)::numeric / s.step_days)::int,
           s.last_date, make_interval(days => s.step_days)) occ
    where s.step_days is not null
    union all
    -- Monthly: start_date + k months, for the months between the next date and the last.
    select s.id, (s.start_date + make_interval(months => k))::date
    from steps s,
         generate_series(
           greatest(0, (extract(year from s.next_booking_date)::int - extract(year from s.start_date)::int) * 12
                       + extract(month from s.next_booking_date)::int - extract(month from s.start_date)::int - 1),
           (extract(year from s.last_date)::int - extract(year from s.start_date)::int) * 12
             + extract(month from s.last_date)::int - extract(month from s.start_date)::int) k
    where s.step_days is null
      and (s.start_date + make_interval(months => k))::date between s.next_booking_date and s.last_date
  )
  select o.recurring_id, o.occurrence_date, r.user_id as client_id, r.specialist_id,
         (o.occurrence_date + r.start_time) at time zone r.timezone as starts_at,
         ((o.occurrence_date + r.start_time) at time zone r.timezone)
           + make_interval(mins => r.duration_minutes) as ends_at,
         rate.amount, rate.currency, sp.timezone as specialist_timezone,
         gen_random_uuid() as new_session_id,
         cast(null as text) as problem
  from occurrences o
  join public.recurring_bookings r on r.id = o.recurring_id
  join public.profiles sp on sp.id = r.specialist_id
  left join lateral (
    select sr.amount, sr.currency from public.specialist_rates sr
    where sr.specialist_id = r.specialist_id and sr.effective_from <= run_at
      and (sr.effective_to is null or sr.effective_to > run_at)
  ) rate on true;

  -- What cannot be booked, and why (first reason wins).
  update dispatch_occurrences o set problem = 'missed: the occurrence was already past when dispatched'
  where o.starts_at <= run_at;

  update dispatch_occurrences o set problem = 'No rates found'
  where o.problem is null and o.amount is null;

  update dispatch_occurrences o set problem = 'The specialist is unavailable that day (availability exception)'
  where o.problem is null and exists (
    select 1 from public.specialist_availability_exceptions e
    where e.specialist_id = o.specialist_id
      and e.exception_date = (o.starts_at at time zone o.specialist_timezone)::date
      and not e.is_available
      and (e.all_day
           or (e.start_time < (o.ends_at at time zone o.specialist_timezone)::time
               and (o.starts_at at time zone o.specialist_timezone)::time < e.end_time)));

  -- Occurrences already made (a re-run, or a session made earlier) are neither created nor reported.
  delete from dispatch_occurrences o
  where exists (select 1 from public.sessions s
                where s.recurring_booking_id = o.recurring_id and s.occurrence_date = o.occurrence_date);

  with created as (
    insert into public.sessions (id, specialist_id, client_id, starts_at, ends_at, price, currency,
                                 recurring_booking_id, occurrence_date, session_type, google_calendar_event_id)
    select o.new_session_id, o.specialist_id, o.client_id, o.starts_at, o.ends_at, o.amount, o.currency,
           o.recurring_id, o.occurrence_date, 'follow_up',
           case when with_calendar then replace(o.new_session_id::text, '-', '') end
    from dispatch_occurrences o
    where o.problem is null
    order by o.specialist_id, o.starts_at
    on conflict do nothing
    returning id
  )
  update dispatch_occurrences o set problem = 'created'
  from created c where c.id = o.new_session_id;

  -- Not created and no reason yet: an overlap refused by the exclusion constraints.
  update dispatch_occurrences o
  set problem = case
    when exists (select 1 from public.sessions s
                 where s.specialist_id = o.specialist_id and s.status = 'confirmed'
                   and tstzrange(s.starts_at, s.ends_at) && tstzrange(o.starts_at, o.ends_at))
      then 'The specialist already has a session at that time'
    else 'The client already has a session at that time' end
  where o.problem is null;

  -- Every due recurrence moves past the horizon (or its end), whatever happened.
  update public.recurring_bookings r
  set next_booking_date = nxt.next_date,
      last_generated_date = coalesce(made.last_made, r.last_generated_date),
      is_active = r.end_date is null or nxt.next_date <= r.end_date
  from (
    select d.id,
           case
             when step > 0 then d.start_date + step * (floor((last_date - d.start_date)::numeric / step)::int + 1)
             -- Monthly: the occurrence in last_date's month, or the one after it.
             when (d.start_date + make_interval(months => month_index))::date > last_date
               then (d.start_date + make_interval(months => month_index))::date
             else (d.start_date + make_interval(months => month_index + 1))::date
           end as next_date
    from public.recurring_bookings d,
         lateral (select case d.frequency when 'weekly' then 7 when 'biweekly' then 14 else 0 end as step,
                         least(horizon, coalesce(d.end_date, horizon)) as last_date) s,
         lateral (select (extract(year from s.last_date)::int - extract(year from d.start_date)::int) * 12
                         + extract(month from s.last_date)::int - extract(month from d.start_date)::int
                         as month_index) m
    where d.is_active and d.next_booking_date <= horizon
  ) nxt
  left join (
    select o.recurring_id, max(o.occurrence_date) as last_made
    from dispatch_occurrences o where o.problem = 'created' group by o.recurring_id
  ) made on made.recurring_id = nxt.id
  where r.id = nxt.id;

  return query
    select case when o.problem = 'created' then 'created'
                when o.problem like 'missed:%' then 'missed'
                else 'error' end,
           o.recurring_id,
           case when o.problem = 'created' then o.new_session_id end,
           o.occurrence_date,
           case when o.problem = 'created' then null
                when o.problem like 'missed:%' then substr(o.problem, 9)
                else o.problem end
    from dispatch_occurrences o
    order by o.recurring_id, o.occurrence_date;
end
$$;
grant execute on function private.dispatch_recurring_bookings(timestamptz, integer, boolean) to service_role;
