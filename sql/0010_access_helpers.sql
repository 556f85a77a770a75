/**
 * Helpers the policies call, and the read models frontends use.
 *
 * Helpers are `security definer` with an empty search_path, live in `private`
 * (never exposed by the API), answer only about the signed-in user, and are
 * called from policies as `(select private.f(...))` where the argument allows.
 */

-- ============================================================================
-- Functions
-- ============================================================================

/** True when the signed-in user's profile says specialist. */
create or replace function private.is_specialist() returns boolean
  language sql stable
  security definer
  set search_path = ''
  as $$
  select exists (
    select 1 from public.profiles
    where id = auth.uid() and role = 'specialist'
  )
$$;
grant execute on function private.is_specialist() to authenticated, service_role;

/** True when the profile exists and is a specialist (for "book with this person"). */
create or replace function private.is_specialist_profile(profile_id uuid) returns boolean
  language sql stable
  security definer
  set search_path = ''
  as $$
  select exists (
    select 1 from public.profiles
    where id = profile_id and role = 'specialist'
  )
$$;
grant execute on function private.is_specialist_profile(uuid) to authenticated, service_role;

/** True when the signed-in user is the client or the specialist of the session. */
create or replace function private.is_session_party(session_id uuid) returns boolean
  language sql stable
  security definer
  set search_path = ''
  as $$
  select exists (
    select 1 from public.sessions
    where id = session_id
      and (client_id = auth.uid() or specialist_id = auth.uid())
  )
$$;
grant execute on function private.is_session_party(uuid) to authenticated, service_role;

/** True when the signed-in user is the specialist of the session. */
create or replace function private.is_session_specialist(session_id uuid) returns boolean
  language sql stable
  security definer
  set search_path = ''
  as $$
  select exists (
    select 1 from public.sessions
    where id = session_id and specialist_id = auth.uid()
  )
$$;
grant execute on function private.is_session_specialist(uuid) to authenticated, service_role;

/**
 * The ids of the signed-in client's sessions (policies use it as a semi-join).
 * PL/pgSQL, like the next one, so that its plan is cached for the connection: an
 * SQL function that cannot be inlined (security definer) is planned on every call.
 */
create or replace function private.my_client_session_ids() returns setof uuid
  language plpgsql stable
  security definer
  set search_path = ''
  as $$
begin
  return query select s.id from public.sessions s where s.client_id = auth.uid();
end
$$;
grant execute on function private.my_client_session_ids() to authenticated, service_role;

/** The ids of the signed-in specialist's sessions (policies use it as a semi-join). */
create or replace function private.my_specialist_session_ids() returns setof uuid
  language plpgsql stable
  security definer
  set search_path = ''
  as $$
begin
  return query select s.id from public.sessions s where s.specialist_id = auth.uid();
end
$$;
grant execute on function private.my_specialist_session_ids() to authenticated, service_role;

/**
 * A person's name, for the signed-in user only when they may know it: their own,
 * a specialist's (public), a client's to a specialist who has a session with
 * them, anyone's to an admin. Nothing else about a client is ever returned.
 */
create or replace function private.visible_name(profile_id uuid) returns text
  language sql stable
  security definer
  set search_path = ''
  as $$
  select p.full_name
  from public.profiles p
  where p.id = profile_id
    and (
      p.id = auth.uid()
      or p.role = 'specialist'
      or exists (
        select 1 from public.sessions s
        where s.client_id = p.id and s.specialist_id = auth.uid()
      )
      or private.is_admin()
    )
$$;
grant execute on function private.visible_name(uuid) to authenticated, service_role;

/**
 * The client names upcoming_sessions may show the signed-in user: their own, and,
 * for a specialist, those of the clients of their upcoming confirmed sessions (a
 * subset of what visible_name allows). Called once per query, not once per row;
 * PL/pgSQL so that its plan is cached for the connection (an SQL function that
 * cannot be inlined is planned again on every call).
 */
create or replace function private.my_upcoming_client_names() returns table (id uuid, full_name text)
  language plpgsql stable
  security definer
  set search_path = ''
  rows 20
  as $$
begin
  return query
    select p.id, p.full_name from public.profiles p where p.id = auth.uid()
    union
    select p.id, p.full_name from public.profiles p
    where p.id in (
      select s.client_id from public.sessions s
      where s.specialist_id = auth.uid() and s.status = 'confirmed' and s.starts_at > now()
    );
end
$$;
grant execute on function private.my_upcoming_client_names() to authenticated, service_role;

-- ============================================================================
-- Views
-- ============================================================================

/**
 * The public face of specialists: what a booking page shows, to anyone. A view
 * with the owner's rights, so profiles' own policies stay strict (no specialist
 * email or calendar id leaves through here).
 */
create view public.specialist_directory as
  select p.id, p.full_name, p.timezone
  from public.profiles p
  where p.role = 'specialist';

/**
 * When specialists are away, for availability checks: dates and hours, never the
 * reason (sick leave is the specialist's own health information).
 */
create view public.specialist_time_off as
  select e.id, e.specialist_id, e.exception_date, e.is_available, e.all_day, e.start_time, e.end_time
  from public.specialist_availability_exceptions e;

/**
 * The signed-in user's upcoming confirmed sessions, soonest first, with local
 * date and times in the viewer's timezone and both parties' names (seed 000's
 * therapist dashboard; a client's own list likewise). Runs with the caller's
 * rights, so the sessions policies apply.
 *
 * Written for the planner (tests/bench/rls_reads.py measures it):
 * - the caller's id is `(select auth.uid())`, one value for the statement, so the
 *   party filter becomes index conditions on (specialist_id, starts_at) and
 *   (client_id, starts_at); a bare auth.uid() is not leakproof, may not be used
 *   before the policies' checks, and made the planner scan every upcoming session;
 * - the viewer's timezone is read once (the OFFSET 0 keeps the subquery from being
 *   copied into each of the four columns that use it), from their own profile;
 * - names come from joins, not from a helper call per row: a specialist's name is
 *   public (specialist_directory), and every row is a session of the viewer's, so
 *   its client's name is one the viewer may know (my_upcoming_client_names).
 */
create view public.upcoming_sessions with (security_invoker = true) as
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
  left join private.my_upcoming_client_names() client on client.id = s.client_id
  where (s.specialist_id = (select auth.uid()) or s.client_id = (select auth.uid()))
    and s.status = 'confirmed'
    and s.starts_at > now()
  order by s.starts_at;
