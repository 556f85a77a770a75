/**
 * How a practice is doing: one row per specialist and calendar month (in the
 * specialist's timezone) of sessions, attendance, cancellations, hours, value.
 *
 * public.session_analytics(from_date, to_date) is the PostgREST RPC: a
 * specialist gets their own rows, an admin every specialist's, anyone else
 * nothing. Everything is computed from the sessions, their cancellations
 * (sql/0060_attendance.sql) and the specialist's hours (private.specialist_hours'
 * rules, sql/0019) at call time: no summary table; the booking path pays one index.
 *
 * PostgREST answers at most 1,000 rows (Supabase's max-rows). An admin's months
 * over many specialists are therefore paged by specialist: each call answers
 * whole specialists only (all months of each, at most 1,000 rows), ordered by
 * specialist_id then month; the next page is asked with after_specialist_id =
 * the last row's specialist_id, until a page comes back with fewer rows than
 * the page's limit (floor(1000 / months) specialists × months).
 */

-- ============================================================================
-- Indexes
-- ============================================================================

-- "Had this client a confirmed session with this specialist before?" (new_clients): one
-- index-only look per client and specialist. The only cost to the booking path: one more
-- index entry per session written (and per cancellation, which writes a new row version).
create index sessions_client_specialist_confirmed_idx
  on public.sessions (client_id, specialist_id, starts_at) where status = 'confirmed';

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * The analytics rows of the given specialists over the local dates
 * from_date..to_date (inclusive), as seen at `at_time` (what has ended by then).
 * A month only partly inside the dates counts only the part inside (sessions
 * and hours alike). Every month of the range has a row, sessions or not.
 * Security definer: callers decide whose rows are asked for.
 */
create or replace function private.session_analytics_rows(specialists uuid[], from_date date, to_date date,
                                                         at_time timestamptz default now())
  returns table (
    specialist_id uuid, month date, sessions integer, attended integer, no_shows integer, unrecorded integer,
    cancelled integer, cancelled_by_client integer, cancelled_late integer, cancelled_by_specialist integer,
    cancelled_by_practice integer, cancellation_rate numeric, booked_minutes integer, available_minutes integer,
    utilization numeric, booked_value numeric, currency text, recurring_share numeric, new_clients integer
  )
  language sql stable
  security definer
  set search_path = ''
  -- generate_series over parameters has guessed row counts; JIT would compile in vain.
  set jit = off
  as $$
  with sp as (
    select p.id, p.timezone as zone,
           private.local_instant(from_date::timestamp, p.timezone) as range_start,
           private.local_instant((to_date + 1)::timestamp, p.timezone) as range_end
    from public.profiles p
    where p.id = any (specialists) and p.role = 'specialist'
  ),
  months as (
    select sp.id, sp.zone, m::date as month,
           greatest(m::date, from_date) as first_day,
           least((m + interval '1 month')::date - 1, to_date) as last_day
    from sp
    cross join generate_series(date_trunc('month', from_date::timestamp), date_trunc('month', to_date::timestamp),
                               interval '1 month') as m
  ),
  s as (
    select sp.id as specialist_id, sp.zone, sp.range_start,
           date_trunc('month', x.starts_at at time zone sp.zone)::date as month,
           x.client_id, x.status, x.starts_at, x.ends_at, x.attendance, x.price, x.currency, x.occurrence_date,
           c.cancelled_by_party, c.late
    from sp
    join public.sessions x on x.specialist_id = sp.id and x.starts_at >= sp.range_start and x.starts_at < sp.range_end
    left join public.booking_cancellations c on x.status = 'cancelled' and c.booking_id = x.id
  ),
  totals as (
    select s.specialist_id, s.month,
           count(*) filter (where s.status = 'confirmed') as sessions,
           count(*) filter (where s.attendance = 'attended') as attended,
           count(*) filter (where s.attendance = 'no_show') as no_shows,
           count(*) filter (where s.status = 'confirmed' and s.attendance is null and s.ends_at <= at_time) as unrecorded,
           count(*) filter (where s.status = 'cancelled') as cancelled,
           count(*) filter (where s.cancelled_by_party in ('client', 'link')) as cancelled_by_client,
           count(*) filter (where s.late) as cancelled_late,
           count(*) filter (where s.cancelled_by_party = 'specialist') as cancelled_by_specialist,
           count(*) filter (where s.cancelled_by_party in ('admin', 'system')) as cancelled_by_practice,
           coalesce(sum(extract(epoch from s.ends_at - s.starts_at)) filter (where s.status = 'confirmed'), 0) / 60
             as booked_minutes,
           sum(s.price) filter (where s.status = 'confirmed') as booked_value,
           min(s.currency) filter (where s.status = 'confirmed' and s.price is not null) as currency,
           max(s.currency) filter (where s.status = 'confirmed' and s.price is not null) as last_currency,
           count(*) filter (where s.status = 'confirmed' and s.occurrence_date is not null) as recurring
    from s
    group by s.specialist_id, s.month
  ),
  -- A new client: their first confirmed session with the specialist, ever, starts in the month.
  -- One look back per client and specialist (not per session), before the range.
  new_clients as (
    select f.specialist_id, date_trunc('month', f.first_start at time zone f.zone)::date as month, count(*) as n
    from (select s.specialist_id, s.client_id, s.zone, s.range_start, min(s.starts_at) as first_start
          from s where s.status = 'confirmed'
          group by s.specialist_id, s.client_id, s.zone, s.range_start) f
    where not exists (select 1 from public.sessions e
                      where e.client_id = f.client_id and e.specialist_id = f.specialist_id
                        and e.status = 'confirmed' and e.starts_at < f.range_start)
    group by 1, 2
  ),
  -- The specialist's hours, by private.specialist_hours' rules, counted without expanding
  -- every day: on an ordinary day (no exception, no clock change) a weekday's windows last
  -- their wall-clock minutes, merged; so a month is the sum over weekdays of (that weekday's
  -- dates in the month) × (its minutes). The few other days are expanded into instants
  -- exactly as specialist_hours does, and replace their weekday's share.
  weekday_minutes as (
    select d.specialist_id, d.day_of_week,
           (select sum(extract(epoch from upper(r) - lower(r))) / 60 from unnest(d.hours) as r) as minutes
    from (select w.specialist_id, w.day_of_week,
                 range_agg(tsrange(date '2000-01-01' + w.start_time, date '2000-01-01' + w.end_time)) as hours
          from public.availability_windows w
          where w.specialist_id = any (specialists) and w.is_active
          group by w.specialist_id, w.day_of_week) d
  ),
  ordinary_minutes as (
    select m.id, m.month,
           sum(wm.minutes * case when m.first_day + k.k > m.last_day then 0
                                 else (m.last_day - (m.first_day + k.k)) / 7 + 1 end) as minutes
    from months m
    join weekday_minutes wm on wm.specialist_id = m.id
    cross join lateral (select (wm.day_of_week - extract(dow from m.first_day)::integer + 7) % 7 as k) k
    group by m.id, m.month
  ),
  zone_days as (
    select z.zone, d::date as day
    from (select distinct sp.zone from sp) z
    cross join generate_series(from_date::timestamp, to_date::timestamp, interval '1 day') as d
    where ((d + interval '1 day') at time zone z.zone) - (d at time zone z.zone) <> interval '24 hours'
  ),
  special_days as (
    select m.id, m.zone, m.month, zd.day
    from months m join zone_days zd on zd.zone = m.zone and zd.day between m.first_day and m.last_day
    union
    select m.id, m.zone, m.month, e.exception_date
    from months m
    join public.specialist_availability_exceptions e
      on e.specialist_id = m.id and e.exception_date between m.first_day and m.last_day
  ),
  special_minutes as (
    select sd.id, sd.month,
           sum(coalesce(wm.minutes, 0)) as ordinary,
           sum((select coalesce(sum(extract(epoch from upper(r) - lower(r))), 0) / 60
                from unnest(coalesce(x.replacement, w.hours, '{}'::tstzmultirange)
                            - coalesce(x.time_off, '{}'::tstzmultirange)) as r)) as exact
    from special_days sd
    left join weekday_minutes wm on wm.specialist_id = sd.id and wm.day_of_week = extract(dow from sd.day)
    cross join lateral (
      select range_agg(tstzrange(private.local_instant(sd.day + w.start_time, sd.zone),
                                 private.local_instant(sd.day + w.end_time, sd.zone))) as hours
      from public.availability_windows w
      where w.specialist_id = sd.id and w.is_active and w.day_of_week = extract(dow from sd.day)
    ) w
    cross join lateral (
      select range_agg(tstzrange(
               private.local_instant(sd.day + case when e.all_day then time '00:00' else e.start_time end, sd.zone),
               private.local_instant(sd.day + case when e.all_day then time '24:00' else e.end_time end, sd.zone)))
               filter (where e.is_available) as replacement,
             range_agg(tstzrange(
               private.local_instant(sd.day + case when e.all_day then time '00:00' else e.start_time end, sd.zone),
               private.local_instant(sd.day + case when e.all_day then time '24:00' else e.end_time end, sd.zone)))
               filter (where not e.is_available) as time_off
      from public.specialist_availability_exceptions e
      where e.specialist_id = sd.id and e.exception_date = sd.day
    ) x
    group by sd.id, sd.month
  ),
  hours as (
    select m.id, m.month, coalesce(o.minutes, 0) - coalesce(x.ordinary, 0) + coalesce(x.exact, 0) as minutes
    from months m
    left join ordinary_minutes o on o.id = m.id and o.month = m.month
    left join special_minutes x on x.id = m.id and x.month = m.month
  )
  select m.id, m.month,
         coalesce(t.sessions, 0)::integer,
         coalesce(t.attended, 0)::integer,
         coalesce(t.no_shows, 0)::integer,
         coalesce(t.unrecorded, 0)::integer,
         coalesce(t.cancelled, 0)::integer,
         coalesce(t.cancelled_by_client, 0)::integer,
         coalesce(t.cancelled_late, 0)::integer,
         coalesce(t.cancelled_by_specialist, 0)::integer,
         coalesce(t.cancelled_by_practice, 0)::integer,
         round(t.cancelled::numeric / nullif(t.sessions + t.cancelled, 0), 4),
         coalesce(t.booked_minutes, 0)::integer,
         h.minutes::integer,
         round(coalesce(t.booked_minutes, 0)::numeric / nullif(h.minutes, 0), 4),
         -- Never summed across currencies: null (value and currency) when the month has several.
         case when t.currency is not distinct from t.last_currency then coalesce(t.booked_value, 0) end,
         case when t.currency = t.last_currency then t.currency end,
         round(t.recurring::numeric / nullif(t.sessions, 0), 4),
         coalesce(n.n, 0)::integer
  from months m
  left join totals t on t.specialist_id = m.id and t.month = m.month
  left join new_clients n on n.specialist_id = m.id and n.month = m.month
  join hours h on h.id = m.id and h.month = m.month
  order by m.id, m.month
$$;
grant execute on function private.session_analytics_rows(uuid[], date, date, timestamptz) to service_role;

/**
 * Session analytics (PostgREST: POST /rest/v1/rpc/session_analytics): one row
 * per specialist and calendar month of the local dates from_date..to_date, at
 * most 24 months. A specialist gets their own rows, an admin (or the service)
 * every specialist's, paged by specialist (after_specialist_id, at most 1,000
 * rows a call), anyone else none. The columns are defined in the README.
 */
create or replace function public.session_analytics(from_date date, to_date date,
                                                    after_specialist_id uuid default null)
  returns table (
    specialist_id uuid, month date, sessions integer, attended integer, no_shows integer, unrecorded integer,
    cancelled integer, cancelled_by_client integer, cancelled_late integer, cancelled_by_specialist integer,
    cancelled_by_practice integer, cancellation_rate numeric, booked_minutes integer, available_minutes integer,
    utilization numeric, booked_value numeric, currency text, recurring_share numeric, new_clients integer
  )
  language plpgsql stable
  security definer
  set search_path = ''
  as $$
declare
  caller uuid := auth.uid();
  months integer;
  chosen uuid[];
begin
  if from_date is null or to_date is null then
    raise exception 'from_date and to_date are required.' using errcode = '22023';
  end if;
  if to_date < from_date then
    raise exception 'to_date (%) is before from_date (%).', to_date, from_date using errcode = '22023';
  end if;
  months := (extract(year from to_date)::integer - extract(year from from_date)::integer) * 12
            + extract(month from to_date)::integer - extract(month from from_date)::integer + 1;
  if months > 24 then
    raise exception 'At most 24 months of analytics can be asked for at once; % to % is % months.',
      from_date, to_date, months using errcode = '22023';
  end if;

  if private.is_admin() or current_setting('role') not in ('anon', 'authenticated') then
    select coalesce(array_agg(p.id order by p.id), '{}') into chosen
    from (select p.id from public.profiles p
          where p.role = 'specialist' and (after_specialist_id is null or p.id > after_specialist_id)
          order by p.id
          limit 1000 / months) p;
  elsif caller is not null
        and exists (select 1 from public.profiles p where p.id = caller and p.role = 'specialist')
        and (after_specialist_id is null or caller > after_specialist_id) then
    chosen := array[caller];
  else
    return;
  end if;

  return query select * from private.session_analytics_rows(chosen, from_date, to_date, now());
end
$$;
revoke execute on function public.session_analytics(date, date, uuid) from public, anon;
grant execute on function public.session_analytics(date, date, uuid) to authenticated, service_role;
