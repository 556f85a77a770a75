/**
 * The booking rules, defined once, in the database.
 *
 * "May this session exist?" is answered by one function, private.slot_problem(),
 * and every door asks it: a BEFORE trigger on sessions (booking-create, any
 * service insert, a move of a session's time), the recurring dispatcher
 * (set-based, the same function inlined into its query), recurring-booking
 * creation and change, and the free-slot read (available_slots), which offers
 * only what the function accepts. The rules:
 *
 *  1. the specialist exists and is a specialist;
 *  2. minimum notice and maximum advance (practice settings);
 *  3. the length is one the specialist offers now (a current rate of exactly that
 *     many minutes), and the session is priced at that rate;
 *  4. the session lies inside the specialist's hours on its day, compared as
 *     instants in the specialist's timezone (correct on both DST days): the
 *     weekly windows, replaced that day by any `is_available` exceptions, minus
 *     the `not is_available` exceptions (all day, or their hours);
 *  5. no overlap with the specialist's confirmed sessions, each followed by the
 *     specialist's buffer, nor with the client's confirmed sessions.
 *
 * Rule 5 is also held by the exclusion constraints (racing writers), and the
 * specialist's constraint now covers each session's buffer: every session stores
 * `blocked_until` (its end plus the specialist's buffer when it was booked), so
 * two bookings racing for adjacent slots cannot both keep their buffers.
 *
 * The client's minimum cancellation notice lives in the cancellation trigger
 * (every door that cancels inserts into booking_cancellations).
 *
 * Trusted writers (the service or an operator, never an API role) can turn the
 * checks off for one transaction with `set local app.booking_rules = 'off'`, to
 * import sessions made elsewhere; the bookkeeping (blocked_until) still runs.
 */

-- ============================================================================
-- Settings
-- ============================================================================

alter table private.practice_settings
  -- The step between offered slot starts; null = the session length plus the specialist's buffer.
  add column slot_step_minutes integer
    constraint practice_settings_slot_step_minutes_check check (slot_step_minutes between 5 and 480);

-- ============================================================================
-- Tables
-- ============================================================================

-- Minutes a specialist keeps free after each session.
alter table public.profiles add column buffer_minutes integer not null default 0
  constraint profiles_buffer_minutes_check check (buffer_minutes between 0 and 120);

-- A specialist may offer several lengths, each with its own price: rates no longer
-- overlap per specialist and length (they did per specialist).
alter table public.specialist_rates drop constraint specialist_rates_no_overlap;
alter table public.specialist_rates add constraint specialist_rates_no_overlap exclude using gist (
  specialist_id with =,
  duration_minutes with =,
  tstzrange(effective_from, effective_to) with &&
);

-- The end of the time a session keeps from the specialist's other sessions: its end
-- plus the specialist's buffer when it was booked (or moved).
alter table public.sessions add column blocked_until timestamptz;
update public.sessions set blocked_until = ends_at;
alter table public.sessions alter column blocked_until set not null;
alter table public.sessions add constraint sessions_blocked_until_check check (blocked_until >= ends_at);
alter table public.sessions drop constraint sessions_no_specialist_overlap;
alter table public.sessions add constraint sessions_no_specialist_overlap exclude using gist (
  specialist_id with =,
  tstzrange(starts_at, blocked_until) with &&
) where (status = 'confirmed');

-- ============================================================================
-- Functions: rates and hours
-- ============================================================================

drop function private.current_rate(uuid, timestamptz);

/**
 * The rate in effect at a moment (now by default) for a length; without a length,
 * the shortest length offered then (the default length everywhere).
 */
create or replace function private.current_rate(specialist uuid, at_time timestamptz default now(),
                                                minutes integer default null)
  returns public.specialist_rates
  language sql stable
  set search_path = ''
  as $$
  select r.* from public.specialist_rates r
  where r.specialist_id = specialist
    and r.effective_from <= at_time
    and (r.effective_to is null or r.effective_to > at_time)
    and (minutes is null or r.duration_minutes = minutes)
  order by r.duration_minutes
  limit 1
$$;
grant execute on function private.current_rate(uuid, timestamptz, integer) to service_role;

/** The lengths (minutes) a specialist offers at a moment, shortest first. */
create or replace function private.offered_lengths(specialist uuid, at_time timestamptz default now())
  returns integer[]
  -- PL/pgSQL, not SQL: every caller runs it once per call, and PL/pgSQL keeps its plan for
  -- the session where a SQL function's query is planned again on every call.
  language plpgsql stable
  as $$
begin
  return (select coalesce(array_agg(distinct r.duration_minutes order by r.duration_minutes), '{}')
          from public.specialist_rates r
          where r.specialist_id = specialist
            and r.effective_from <= at_time
            and (r.effective_to is null or r.effective_to > at_time));
end
$$;
grant execute on function private.offered_lengths(uuid, timestamptz) to service_role;

/**
 * The instants a specialist works on the local dates from..to (inclusive), as a
 * multirange (adjacent and overlapping hours merge). `apply` says how much of
 * the rules to apply:
 *   'windows'       the weekly windows only;
 *   'replacements'  the weekly windows, replaced on a day by that day's
 *                   `is_available` exceptions (all-day ones: the whole day);
 *   'all'           the above minus the `not is_available` exceptions.
 * Local times become instants with private.local_instant, so a window keeps its
 * wall-clock hours on both DST days (and is an hour shorter or longer then).
 */
create or replace function private.specialist_hours(specialist uuid, zone text, from_date date, to_date date,
                                                    apply text default 'all')
  returns tstzmultirange
  -- PL/pgSQL, not SQL, for its cached plan (see offered_lengths).
  language plpgsql stable
  as $$
begin
  -- One pass per source over the whole range (hours of different days never overlap: each
  -- lies within its own local day, so subtracting the range's unavailable hours at once is
  -- the same as doing it day by day).
  return (
  with days as (
    select d::date as day, extract(dow from d)::int as dow
    from generate_series(from_date::timestamp, to_date::timestamp, interval '1 day') d
  ), exceptions as (
    select e.exception_date, e.is_available,
           tstzrange(private.local_instant(e.exception_date + case when e.all_day then time '00:00' else e.start_time end, zone),
                     private.local_instant(e.exception_date + case when e.all_day then time '24:00' else e.end_time end, zone))
             as hours
    from public.specialist_availability_exceptions e
    where e.specialist_id = specialist and e.exception_date between from_date and to_date
      and apply <> 'windows'
  ), base as (
    select tstzrange(private.local_instant(days.day + w.start_time, zone),
                     private.local_instant(days.day + w.end_time, zone)) as hours
    from days
    join public.availability_windows w
      on w.specialist_id = specialist and w.is_active and w.day_of_week = days.dow
    where not exists (select 1 from exceptions e where e.exception_date = days.day and e.is_available)
    union all
    select e.hours from exceptions e where e.is_available
  )
  select coalesce((select range_agg(b.hours) from base b), '{}'::tstzmultirange)
         - case when apply = 'all'
                then coalesce((select range_agg(e.hours) from exceptions e where not e.is_available),
                              '{}'::tstzmultirange)
                else '{}'::tstzmultirange end);
end
$$;
grant execute on function private.specialist_hours(uuid, text, date, date, text) to service_role;

-- ============================================================================
-- Functions: the rules
-- ============================================================================

/**
 * Why a session of `specialist` with `client` from `starts` to `ends` may not
 * exist, as seen at `at_time`: no row when it may, else one row with the first
 * rule it breaks (sqlstate, reason, message). `ignore_session` is left out of the
 * overlap checks (a session being moved). The flags leave out rule groups for the
 * callers that apply them otherwise: available_slots generates starts inside the
 * hours already; recurring-booking creation checks only its weekly time.
 *
 * One SQL query with no SET clause and no security definer, so PostgreSQL
 * inlines it into the caller's query: the dispatcher checks 100,000 occurrences
 * with it set-based, as part of one plan. Every name is schema-qualified. Only
 * security-definer callers use it; API roles cannot execute it.
 */
create or replace function private.slot_problem(
  specialist uuid, client uuid, starts timestamptz, ends timestamptz,
  ignore_session uuid default null, at_time timestamptz default now(),
  check_notice boolean default true, check_hours boolean default true, check_sessions boolean default true
) returns table (sqlstate text, reason text, message text)
  language sql stable
  as $$
  -- Materialized: evaluated once per call (offered_lengths is read by several rules).
  with facts as materialized (
    select sp.role is not distinct from 'specialist' as is_specialist,
           sp.timezone as zone,
           coalesce(sp.buffer_minutes, 0) as buffer,
           st.booking_min_notice_hours as notice_hours,
           st.booking_max_advance_days as advance_days,
           extract(epoch from ends - starts) / 60 as minutes,
           private.offered_lengths(specialist, at_time) as lengths,
           -- The hours on the session's local dates, every exception applied (computed once).
           case when check_hours and sp.role = 'specialist' then
             private.specialist_hours(specialist, sp.timezone, (starts at time zone sp.timezone)::date,
                                      (ends at time zone sp.timezone)::date, 'all') end as hours
    -- limit 1: the planner then knows it is one row (the table is never analyzed, and an
    -- estimate of 1,430 rows made every caller's plan cost enough to JIT-compile for seconds).
    from (select * from private.practice_settings limit 1) st
    left join public.profiles sp on sp.id = specialist
  )
  select p.sqlstate, p.reason, p.message
  from facts f
  cross join lateral (
    select 1 as priority, 'TB017' as sqlstate, 'not_bookable' as reason,
           format('No specialist with id %s', specialist) as message
    where not f.is_specialist
    union all
    select 2, 'TB010', 'too_soon', format('Sessions must be booked at least %s hours ahead', f.notice_hours)
    where check_notice and starts < at_time + make_interval(hours => f.notice_hours)
    union all
    select 3, 'TB011', 'too_far', format('Sessions can be booked at most %s days ahead', f.advance_days)
    where check_notice and starts > at_time + make_interval(days => f.advance_days)
    union all
    select 4, 'TB018', 'no_rate', 'No rates found'
    where f.is_specialist and cardinality(f.lengths) = 0
    union all
    select 5, 'TB016', 'length',
           format('The specialist offers sessions of %s minutes, not %s',
                  array_to_string(f.lengths, ' or '), trim_scale(f.minutes))
    where cardinality(f.lengths) > 0 and not (f.minutes = any (f.lengths))
    union all
    -- Outside the hours: which rule says so (the weekly windows or an exception) is only
    -- worked out when the session does not fit (the first test is false for every fit).
    select 6, 'TB012', 'outside_hours', 'The slot is outside the specialist''s working hours'
    where check_hours and f.is_specialist and not f.hours @> tstzrange(starts, ends)
      and not private.specialist_hours(specialist, f.zone, (starts at time zone f.zone)::date,
                                       (ends at time zone f.zone)::date, 'replacements') @> tstzrange(starts, ends)
    union all
    select 7, 'TB013', 'exception', 'The specialist is unavailable that day (availability exception)'
    where check_hours and f.is_specialist and not f.hours @> tstzrange(starts, ends)
    union all
    select 8, 'TB014', 'taken', 'The specialist already has a session at that time'
    where check_sessions and exists (
      select 1 from public.sessions s
      where s.specialist_id = specialist and s.status = 'confirmed' and s.id is distinct from ignore_session
        -- blocked_until >= ends_at: the first test is the exclusion constraint's index, the second the rule
        and tstzrange(s.starts_at, s.blocked_until) && tstzrange(starts, ends)
        and tstzrange(s.starts_at, s.ends_at) && tstzrange(starts, ends))
    union all
    select 9, 'TB014', 'taken',
           format('The specialist keeps %s minutes free after each session', f.buffer)
    where check_sessions and exists (
      select 1 from public.sessions s
      where s.specialist_id = specialist and s.status = 'confirmed' and s.id is distinct from ignore_session
        and tstzrange(s.starts_at, s.blocked_until) && tstzrange(starts, ends + make_interval(mins => f.buffer)))
    union all
    select 10, 'TB015', 'taken', 'The client already has a session at that time'
    where check_sessions and client is not null and exists (
      select 1 from public.sessions s
      where s.client_id = client and s.status = 'confirmed' and s.id is distinct from ignore_session
        and tstzrange(s.starts_at, s.ends_at) && tstzrange(starts, ends))
  ) p
  order by p.priority
  limit 1
$$;
grant execute on function private.slot_problem(uuid, uuid, timestamptz, timestamptz, uuid, timestamptz,
                                               boolean, boolean, boolean) to service_role;

/** True when a trusted writer (never an API role) turned the rules off for its transaction. */
create or replace function private.booking_rules_bypassed() returns boolean
  language sql stable
  set search_path = ''
  as $$
  select current_setting('app.booking_rules', true) = 'off'
     and current_setting('role') not in ('anon', 'authenticated')
$$;
grant execute on function private.booking_rules_bypassed() to service_role;

/**
 * Every confirmed session written one by one (not the dispatcher's bulk insert,
 * which applies slot_problem set-based): keeps the buffer (blocked_until), checks
 * the rules (after sessions_lock_parties has serialized the parties' writers) and
 * prices a new session at the rate of its length.
 */
create or replace function private.apply_booking_rules() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  -- The rules' plan is small; JIT compilation would cost more than running it.
  set jit = off
  as $$
declare
  problem record;
  rate public.specialist_rates;
begin
  if tg_op = 'UPDATE' and new.starts_at = old.starts_at and new.ends_at = old.ends_at then
    return new;
  end if;
  new.blocked_until := new.ends_at + make_interval(mins => coalesce(
    (select p.buffer_minutes from public.profiles p where p.id = new.specialist_id), 0));
  if new.status <> 'confirmed' or private.booking_rules_bypassed() then
    return new;
  end if;
  select * into problem from private.slot_problem(
    new.specialist_id, new.client_id, new.starts_at, new.ends_at,
    case when tg_op = 'UPDATE' then old.id end, now());
  if found then
    raise exception '%', problem.message using errcode = problem.sqlstate, hint = problem.reason;
  end if;
  if tg_op = 'INSERT' then
    rate := private.current_rate(new.specialist_id, now(),
                                 (extract(epoch from new.ends_at - new.starts_at) / 60)::integer);
    new.price := rate.amount;
    new.currency := rate.currency;
  end if;
  return new;
end
$$;

/** The specialist's shortest current length (the default length everywhere), or null. */
create or replace function private.default_length(specialist uuid, at_time timestamptz default now())
  returns integer
  language sql stable
  security definer
  set search_path = ''
  as $$
  select (private.offered_lengths(specialist, at_time))[1]
$$;
grant execute on function private.default_length(uuid, timestamptz) to service_role;

-- ============================================================================
-- Functions: free slots
-- ============================================================================

/**
 * The free slots of a specialist on the local dates from..to (their timezone),
 * of a length (default: the shortest offered), as a client would see them
 * (`client`'s own sessions clash too) and ignoring one session (a move). Starts
 * lie on a grid: from the start of each stretch of working hours, every length
 * plus buffer (or practice_settings.slot_step_minutes). Every offered slot is
 * one slot_problem accepts (the same rules in their set form, held equal by a
 * property test); the grid only shapes the list.
 *
 * At most 62 days and 1,000 slots (PostgREST's row limit on Supabase): more is
 * refused with a sentence that says so, never cut silently.
 */
create or replace function private.free_slots(specialist uuid, from_date date, to_date date,
                                              minutes integer, client uuid, ignore_session uuid,
                                              at_time timestamptz)
  returns table (starts_at timestamptz, ends_at timestamptz)
  language plpgsql stable
  security definer
  set search_path = ''
  -- The rules' plan is small; JIT compilation would cost more than running it.
  set jit = off
  as $$
declare
  zone text;
  buffer integer;
  step integer;
  notice integer;
  advance integer;
  lengths integer[];
  found_rows integer;
begin
  if from_date is null or to_date is null then
    raise exception 'from_date and to_date are required.' using errcode = '22023';
  end if;
  if to_date < from_date then
    raise exception 'to_date (%) is before from_date (%).', to_date, from_date using errcode = '22023';
  end if;
  if to_date - from_date + 1 > 62 then
    raise exception 'At most 62 days of free slots can be asked for at once; % to % is % days.',
      from_date, to_date, to_date - from_date + 1 using errcode = '22023';
  end if;
  select p.timezone, p.buffer_minutes into zone, buffer
  from public.profiles p where p.id = specialist and p.role = 'specialist';
  if not found then
    raise exception 'No specialist with id %.', specialist using errcode = 'PT404';
  end if;
  lengths := private.offered_lengths(specialist, at_time);
  if cardinality(lengths) = 0 then
    raise exception 'Specialist % has no current rate, so has no free slots.', specialist using errcode = 'PT404';
  end if;
  minutes := coalesce(minutes, lengths[1]);
  if not (minutes = any (lengths)) then
    raise exception 'The specialist offers sessions of % minutes, not %.',
      array_to_string(lengths, ' or '), minutes using errcode = '22023';
  end if;
  step := coalesce((private.practice_settings()).slot_step_minutes, minutes + buffer);

  -- The rules slot_problem checks one session at a time, in their set form for a whole
  -- range (one index scan per party instead of three per slot): notice and advance, and
  -- overlap with the parties' sessions as multiranges (an overlap with any member is an
  -- overlap with their union). The property test (tests/test_available_slots_property.py)
  -- holds this list equal to what slot_problem accepts.
  notice := (private.practice_settings()).booking_min_notice_hours;
  advance := (private.practice_settings()).booking_max_advance_days;
  return query
    with hours as (
      select private.specialist_hours(specialist, zone, from_date, to_date, 'all') as stretches
    ), span as (
      select tstzrange(lower(h.stretches), upper(h.stretches) + make_interval(mins => buffer)) as whole
      from hours h
    ), busy as (
      select (select coalesce(range_agg(tstzrange(s.starts_at, s.blocked_until)), '{}'::tstzmultirange)
              from public.sessions s, span
              where s.specialist_id = specialist and s.status = 'confirmed'
                and s.id is distinct from ignore_session
                and tstzrange(s.starts_at, s.blocked_until) && span.whole) as specialist_busy,
             (select coalesce(range_agg(tstzrange(s.starts_at, s.ends_at)), '{}'::tstzmultirange)
              from public.sessions s, span
              where client is not null and s.client_id = client and s.status = 'confirmed'
                and s.id is distinct from ignore_session
                and tstzrange(s.starts_at, s.ends_at) && span.whole) as client_busy
    )
    select c.starts, c.starts + make_interval(mins => minutes)
    from hours h
    cross join busy b
    cross join lateral unnest(h.stretches) as stretch(r)
    cross join lateral generate_series(lower(stretch.r), upper(stretch.r) - make_interval(mins => minutes),
                                       make_interval(mins => step)) as c(starts)
    where c.starts >= at_time + make_interval(hours => notice)
      and c.starts <= at_time + make_interval(days => advance)
      and not (b.specialist_busy && tstzrange(c.starts, c.starts + make_interval(mins => minutes + buffer)))
      and not (b.client_busy && tstzrange(c.starts, c.starts + make_interval(mins => minutes)))
    order by c.starts
    limit 1001;
  get diagnostics found_rows = row_count;
  if found_rows > 1000 then
    raise exception 'More than 1,000 free slots between % and %; ask for fewer days.', from_date, to_date
      using errcode = '22023';
  end if;
end
$$;
grant execute on function private.free_slots(uuid, date, date, integer, uuid, uuid, timestamptz) to service_role;

/**
 * The free slots of a specialist (PostgREST: POST /rest/v1/rpc/available_slots),
 * for anyone: booking pages are public. Dates are the specialist's local dates,
 * inclusive. It answers start and end times only: no session, no name, no reason
 * for a gap. A signed-in caller's own sessions clash too.
 */
create or replace function public.available_slots(specialist_id uuid, from_date date, to_date date,
                                                  duration_minutes integer default null)
  returns table (starts_at timestamptz, ends_at timestamptz)
  language sql stable
  security definer
  set search_path = ''
  as $$
  select f.starts_at, f.ends_at
  from private.free_slots(specialist_id, from_date, to_date, duration_minutes, auth.uid(), null, now()) f
$$;
grant execute on function public.available_slots(uuid, date, date, integer) to anon, authenticated, service_role;

-- ============================================================================
-- Functions: cancellation notice
-- ============================================================================

/**
 * Before the cancellation is stored (sql/0008, now with the client's notice):
 * refuse a signed-in caller who is no party to the session, lock the session,
 * refuse a session that does not exist, is already cancelled or has already
 * started, and refuse the session's client inside the practice's minimum
 * cancellation notice (specialists, admins and the system are exempt). Every
 * door that cancels (booking-cancel, the emailed link, a frontend's insert)
 * comes through here.
 */
create or replace function private.check_cancellation() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  target public.sessions;
  notice_hours integer := (private.practice_settings()).cancellation_min_notice_hours;
begin
  -- A signed-in caller who is no party learns nothing about the session, not even
  -- whether it exists (its role setting survives security definer; current_user does not).
  if current_setting('role') in ('anon', 'authenticated')
     and not (private.is_session_party(new.booking_id) or private.is_admin()) then
    raise exception 'Only the session''s client or specialist can cancel it.' using errcode = '42501';
  end if;
  select * into target from public.sessions where id = new.booking_id for update;
  if not found then
    raise exception 'Session % does not exist.', new.booking_id using errcode = 'TB001';
  end if;
  if target.status = 'cancelled' then
    raise exception 'Session % is already cancelled.', new.booking_id using errcode = 'TB002';
  end if;
  if target.starts_at <= now() then
    raise exception 'Session % has already started and can no longer be cancelled.', new.booking_id
      using errcode = 'TB003';
  end if;
  new.cancelled_by := coalesce(new.cancelled_by, private.current_actor());
  if notice_hours > 0 and new.cancelled_by = target.client_id
     and target.starts_at < now() + make_interval(hours => notice_hours) then
    raise exception 'Sessions must be cancelled at least % hours ahead; please contact your specialist.',
      notice_hours using errcode = 'TB006';
  end if;
  new.created_at := now();
  new.reason := nullif(btrim(new.reason), '');
  return new;
end
$$;

-- ============================================================================
-- Functions: recurring bookings
-- ============================================================================

/**
 * Recurring bookings obey the booking rules when they are created or changed:
 * - the caller: a signed-in client (not an anonymous sign-in) books for
 *   themselves; at most 3 active recurrences per client and specialist and 10
 *   per client;
 * - next_booking_date (seed 002 sets it) is on or after start_date and on the
 *   cadence (a whole number of weeks, fortnights or months from start_date);
 * - the length is one the specialist offers now;
 * - the first occurrence's time lies inside the specialist's weekly windows
 *   (exceptions and existing sessions are the dispatcher's to report, per occurrence);
 * - a specialist may only end a recurrence aimed at them (is_active false, or an
 *   earlier end_date), never change it otherwise.
 */
create or replace function private.check_recurring_booking() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  -- The rules' plan is small; JIT compilation would cost more than running it.
  set jit = off
  as $$
declare
  api_caller boolean := current_setting('role') in ('anon', 'authenticated');
  caller uuid := auth.uid();
  caller_role text;
  first_start timestamptz;
  problem record;
  months integer;
begin
  if api_caller then
    select p.role into caller_role from public.profiles p where p.id = caller;
    if tg_op = 'UPDATE' and caller = old.specialist_id and caller <> old.user_id and caller_role <> 'admin' then
      if (to_jsonb(new) - array['is_active', 'end_date', 'updated_at'])
         is distinct from (to_jsonb(old) - array['is_active', 'end_date', 'updated_at'])
         or (new.is_active and not old.is_active)
         or (new.end_date is distinct from old.end_date
             and (new.end_date is null or (old.end_date is not null and new.end_date > old.end_date))) then
        raise exception 'A specialist can only end a recurring booking (is_active false, or an earlier end_date).'
          using errcode = '42501';
      end if;
      return new;
    end if;
    -- Booking in someone else's name, or with someone who is not a specialist: the
    -- policies refuse it (42501), exactly as for any other row a caller may not write.
    if (new.user_id is distinct from caller or not private.is_specialist_profile(new.specialist_id))
       and caller_role is distinct from 'admin' then
      return new;
    end if;
    if coalesce((auth.jwt() ->> 'is_anonymous')::boolean, false) then
      raise exception 'Anonymous sign-ins cannot make recurring bookings; sign up first.' using errcode = '42501';
    end if;
    if caller_role is distinct from 'admin' and caller_role is distinct from 'client' then
      raise exception 'Only clients make recurring bookings.' using errcode = '42501';
    end if;
  end if;
  if private.booking_rules_bypassed() then
    return new;
  end if;
  -- Ending a recurrence is always allowed; only what makes sessions is checked.
  if tg_op = 'UPDATE' and not new.is_active then
    return new;
  end if;

  if new.next_booking_date < new.start_date then
    raise exception 'next_booking_date (%) is before start_date (%).', new.next_booking_date, new.start_date
      using errcode = '23514';
  end if;
  if new.frequency in ('weekly', 'biweekly')
     and (new.next_booking_date - new.start_date) % (case new.frequency when 'weekly' then 7 else 14 end) <> 0 then
    raise exception 'next_booking_date (%) is not on the % cadence from start_date (%).',
      new.next_booking_date, new.frequency, new.start_date using errcode = '23514';
  end if;
  if new.frequency = 'monthly' then
    months := (extract(year from new.next_booking_date)::int - extract(year from new.start_date)::int) * 12
              + extract(month from new.next_booking_date)::int - extract(month from new.start_date)::int;
    if (new.start_date + make_interval(months => months))::date <> new.next_booking_date then
      raise exception 'next_booking_date (%) is not on the monthly cadence from start_date (%).',
        new.next_booking_date, new.start_date using errcode = '23514';
    end if;
  end if;

  if new.is_active and (tg_op = 'INSERT' or not old.is_active) then
    -- Concurrent creations by one client queue here, so the limits hold.
    perform pg_advisory_xact_lock(hashtextextended('recurring_bookings.client:' || new.user_id::text, 0));
    if (select count(*) from public.recurring_bookings r
        where r.user_id = new.user_id and r.specialist_id = new.specialist_id and r.is_active
          and r.id <> new.id) >= 3 then
      raise exception 'A client can have at most 3 active recurring bookings with one specialist.'
        using errcode = '23514';
    end if;
    if (select count(*) from public.recurring_bookings r
        where r.user_id = new.user_id and r.is_active and r.id <> new.id) >= 10 then
      raise exception 'A client can have at most 10 active recurring bookings.' using errcode = '23514';
    end if;
  end if;

  first_start := private.local_instant(new.next_booking_date + new.start_time, new.timezone);
  select * into problem from private.slot_problem(
    new.specialist_id, new.user_id, first_start, first_start + make_interval(mins => new.duration_minutes),
    null, now(), false, false, false);
  if found then
    raise exception '%.', problem.message using errcode = problem.sqlstate, hint = problem.reason;
  end if;
  if not private.specialist_hours(new.specialist_id,
                                      (select p.timezone from public.profiles p where p.id = new.specialist_id),
                                      (first_start at time zone new.timezone)::date - 1,
                                      (first_start at time zone new.timezone)::date + 1, 'windows')
             @> tstzrange(first_start, first_start + make_interval(mins => new.duration_minutes)) then
    raise exception 'The recurring time (% at % for % minutes, %) is outside the specialist''s weekly hours.',
      to_char(new.next_booking_date, 'FMDay'), to_char(new.start_time, 'HH24:MI'), new.duration_minutes,
      new.timezone using errcode = 'TB012';
  end if;
  return new;
end
$$;

/** A specialist's buffer is theirs (or an admin's) to set; a client has none. */
create or replace function private.guard_buffer_minutes() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if new.role <> 'specialist' and new.buffer_minutes <> 0 then
    if tg_op = 'INSERT' or new.buffer_minutes is distinct from old.buffer_minutes then
      raise exception 'Only specialists keep a buffer between sessions.' using errcode = '23514';
    end if;
    new.buffer_minutes := 0; -- no longer a specialist: no buffer
  end if;
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

-- Fires after sessions_lock_parties (name order): the parties' writers are serialized.
-- The dispatcher's bulk insert checks the rules set-based and writes blocked_until itself.
create trigger sessions_rules
  before insert or update of starts_at, ends_at on public.sessions
  for each row when (current_setting('app.bulk_session_insert', true) is distinct from 'on'
                     or new.blocked_until is null)
  execute function private.apply_booking_rules();

-- After recurring_bookings_defaults and recurring_bookings_timezone_check (name order).
create trigger recurring_bookings_validate
  before insert or update on public.recurring_bookings
  for each row when (current_setting('app.bulk_session_insert', true) is distinct from 'on')
  execute function private.check_recurring_booking();

create trigger profiles_guard_buffer_minutes
  before insert or update of buffer_minutes, role on public.profiles
  for each row execute function private.guard_buffer_minutes();

-- ============================================================================
-- Read models
-- ============================================================================

/**
 * Confirmed upcoming sessions that no longer fit their specialist's hours (a new
 * exception, changed weekly hours): accepted changes never cancel anything
 * silently; the specialist sees these here and moves or cancels them. Runs with
 * the caller's rights: a specialist sees their own, an admin all, a client none
 * of anyone else's.
 */
create or replace function private.session_hours_problem(specialist uuid, starts timestamptz, ends timestamptz)
  returns text
  language sql stable
  security definer
  set search_path = ''
  -- The rules' plan is small; JIT compilation would cost more than running it.
  set jit = off
  as $$
  select p.reason from private.slot_problem(specialist, null, starts, ends, null, now(), false, true, false) p
  where p.reason in ('outside_hours', 'exception')
$$;
grant execute on function private.session_hours_problem(uuid, timestamptz, timestamptz) to authenticated, service_role;

create view public.sessions_needing_attention with (security_invoker = true) as
select s.id, s.booking_reference, s.specialist_id, s.client_id, s.starts_at, s.ends_at, h.problem
from public.sessions s
cross join lateral (select private.session_hours_problem(s.specialist_id, s.starts_at, s.ends_at) as problem) h
where s.status = 'confirmed' and s.starts_at > now() and h.problem is not null;

comment on view public.sessions_needing_attention is
  'Upcoming confirmed sessions outside their specialist''s current hours (problem: outside_hours or exception).';
