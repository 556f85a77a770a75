/**
 * What a frontend met through a real PostgREST 12 (tests/test_rest_seed_usage.py),
 * fixed in the schema:
 *
 * - Seed 002's recurring insert sends `next_booking_date`; policies/
 *   recurring_bookings.sql grants it, and the booking rules
 *   (sql/0019_booking_rules.sql) check it against start_date and the cadence.
 * - A specialist's list of all their sessions, past and cancelled ones included,
 *   with each client's name (seed 000: "each session displays its current
 *   status"): upcoming_sessions names only the clients of upcoming confirmed
 *   sessions, and profiles' policies keep client rows from specialists.
 *   Decision: a read model (public.session_list) rather than a policy on
 *   profiles. A policy would hand the specialist the client's whole profile row
 *   (email, timezone, any column added later) because RLS selects rows, not
 *   columns; the view hands over the name alone, and only for people the
 *   specialist has (or had) a session with.
 *
 * Users reading exceptions with `select *` is a policy (policies/
 * specialist_availability_exceptions.sql); nothing here.
 */

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * The names session_list may show the signed-in user: their own, and, for a
 * specialist, those of every client they have a session with (any status, any
 * time). Called once per query; PL/pgSQL so that its plan is cached.
 */
create or replace function private.my_client_names() returns table (id uuid, full_name text)
  language plpgsql stable
  security definer
  set search_path = ''
  rows 50
  as $$
begin
  return query
    select p.id, p.full_name from public.profiles p where p.id = auth.uid()
    union
    select p.id, p.full_name from public.profiles p
    where p.id in (select s.client_id from public.sessions s where s.specialist_id = auth.uid());
end
$$;
revoke execute on function private.my_client_names() from public;
grant execute on function private.my_client_names() to authenticated, service_role;

-- ============================================================================
-- Views
-- ============================================================================

/**
 * Every session of the signed-in user (as client or as specialist), whatever its
 * status or time, with local date and times in the viewer's timezone and both
 * parties' names: a therapist's session list, a client's history. Runs with the
 * caller's rights, so the sessions policies apply; built like upcoming_sessions
 * (one auth.uid(), one timezone read, names by join, not a call per row).
 */
create view public.session_list with (security_invoker = true) as
  select s.id,
         s.booking_reference,
         s.starts_at,
         s.ends_at,
         (s.starts_at at time zone viewer.timezone)::date as local_date,
         (s.starts_at at time zone viewer.timezone)::time as local_start_time,
         (s.ends_at at time zone viewer.timezone)::time as local_end_time,
         viewer.timezone as local_timezone,
         s.session_type,
         s.status,
         s.cancelled_at,
         s.cancellation_reason,
         s.recurring_booking_id,
         s.specialist_id,
         specialist.full_name as specialist_name,
         s.client_id,
         client.full_name as client_name
  from public.sessions s
  cross join (
    select coalesce((select p.timezone from public.profiles p where p.id = (select auth.uid())), 'UTC') as timezone
    offset 0
  ) viewer
  left join public.specialist_directory specialist on specialist.id = s.specialist_id
  left join private.my_client_names() client on client.id = s.client_id
  where s.specialist_id = (select auth.uid()) or s.client_id = (select auth.uid());

-- ============================================================================
-- Read-only read models
-- ============================================================================

/**
 * Writes to the joined read models (upcoming_sessions, session_list and
 * sessions_needing_attention of sql/0019) used to fail with "cannot insert into view"
 * (55000), which PostgREST answers as a 500: a server error no frontend can act
 * on. With an INSTEAD OF trigger PostgreSQL checks privileges first, so a write
 * is refused as every other write without a grant is: 42501, HTTP 403. The
 * trigger itself refuses too, should a grant ever be given.
 */
create or replace function private.refuse_read_model_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  raise exception '% is read-only; sessions are booked and cancelled through the functions.', tg_table_name
    using errcode = '42501';
end
$$;
revoke execute on function private.refuse_read_model_write() from public;

create trigger upcoming_sessions_read_only
  instead of insert or update or delete on public.upcoming_sessions
  for each row execute function private.refuse_read_model_write();

create trigger session_list_read_only
  instead of insert or update or delete on public.session_list
  for each row execute function private.refuse_read_model_write();

create trigger sessions_needing_attention_read_only
  instead of insert or update or delete on public.sessions_needing_attention
  for each row execute function private.refuse_read_model_write();
