/**
 * profiles: users read and edit their own row except `role`; admins read and
 * edit every row (never a role: roles change through the service). Nobody
 * inserts (the auth trigger does) or deletes (deleting the auth user does).
 * Specialists' public fields reach everyone through public.specialist_directory.
 */

alter table public.profiles enable row level security;

revoke all on table public.profiles from public, anon, authenticated;
grant select on table public.profiles to authenticated;
-- buffer_minutes: a specialist's own (a trigger refuses it on anyone else's profile).
grant update (full_name, email, timezone, google_calendar_id, buffer_minutes) on table public.profiles to authenticated;
grant select, insert, update, delete on table public.profiles to service_role;

create policy "Users can read their own profile"
  on public.profiles for select to authenticated
  using (id = (select auth.uid()));

create policy "Admins can read every profile"
  on public.profiles for select to authenticated
  using ((select private.is_admin()));

create policy "Users can update their own profile"
  on public.profiles for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid()));

create policy "Admins can update every profile"
  on public.profiles for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

-- The read models built on profiles (sql/0010_access_helpers.sql).
revoke all on table public.specialist_directory from public, anon, authenticated;
grant select on table public.specialist_directory to anon, authenticated, service_role;

-- Anonymous sign-ins are nobody in particular: they never act as a person (sql/0038_access_hardening.sql).
create policy "Anonymous sign-ins cannot update profiles"
  on public.profiles as restrictive for update to authenticated
  using (not (select private.is_anonymous_sign_in()))
  with check (not (select private.is_anonymous_sign_in()));
