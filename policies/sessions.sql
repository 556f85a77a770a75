/**
 * sessions: a client reads their own, a specialist reads their own, an admin
 * reads all. Frontends write one column: the session's specialist (or an admin)
 * records `attendance` after the end (sql/0060_attendance.sql's trigger holds the
 * rules and stamps who and when). Booking goes through the booking-create
 * function, cancelling through the functions or an insert into
 * booking_cancellations.
 */

alter table public.sessions enable row level security;

revoke all on table public.sessions from public, anon, authenticated;
grant select on table public.sessions to authenticated;
grant update (attendance) on table public.sessions to authenticated;
grant select, insert, update on table public.sessions to service_role;

create policy "Clients can read their own sessions"
  on public.sessions for select to authenticated
  using (client_id = (select auth.uid()));

create policy "Specialists can read their own sessions"
  on public.sessions for select to authenticated
  using (specialist_id = (select auth.uid()));

create policy "Admins can read every session"
  on public.sessions for select to authenticated
  using ((select private.is_admin()));

create policy "Specialists can record attendance of their own sessions"
  on public.sessions for update to authenticated
  using (specialist_id = (select auth.uid()))
  with check (specialist_id = (select auth.uid()));

create policy "Admins can record attendance of any session"
  on public.sessions for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

-- The read model over sessions (sql/0010_access_helpers.sql); it runs with the caller's rights.
revoke all on table public.upcoming_sessions from public, anon, authenticated;
grant select on table public.upcoming_sessions to authenticated, service_role;

-- Sessions that no longer fit their specialist's hours (sql/0019_booking_rules.sql); caller's rights.
revoke all on table public.sessions_needing_attention from public, anon, authenticated;
grant select on table public.sessions_needing_attention to authenticated, service_role;

-- Every session of the viewer, with names (sql/0030_frontend_real_path.sql); the caller's rights.
revoke all on table public.session_list from public, anon, authenticated;
grant select on table public.session_list to authenticated, service_role;
