/**
 * specialist_availability_exceptions: a specialist manages their own; admins
 * manage all; every signed-in user reads them, for availability checks (seed
 * 002: "Users can view", and its own example reads them with `select *`). The
 * reason is a category (vacation, sick_leave, personal, …), shown to users as
 * the seed intends; public.specialist_time_off remains for views without it.
 */

alter table public.specialist_availability_exceptions enable row level security;

revoke all on table public.specialist_availability_exceptions from public, anon, authenticated;
grant select, delete on table public.specialist_availability_exceptions to authenticated;
grant insert (specialist_id, exception_date, is_available, reason, all_day, start_time, end_time),
      update (exception_date, is_available, reason, all_day, start_time, end_time)
  on table public.specialist_availability_exceptions to authenticated;
grant select, insert, update, delete on table public.specialist_availability_exceptions to service_role;

create policy "Signed-in users can read every exception"
  on public.specialist_availability_exceptions for select to authenticated
  using (true);

create policy "Specialists can add their own exceptions"
  on public.specialist_availability_exceptions for insert to authenticated
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can update their own exceptions"
  on public.specialist_availability_exceptions for update to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()))
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can delete their own exceptions"
  on public.specialist_availability_exceptions for delete to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Admins can add exceptions"
  on public.specialist_availability_exceptions for insert to authenticated
  with check ((select private.is_admin()) and private.is_specialist_profile(specialist_id));

create policy "Admins can update every exception"
  on public.specialist_availability_exceptions for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

create policy "Admins can delete every exception"
  on public.specialist_availability_exceptions for delete to authenticated
  using ((select private.is_admin()));

revoke all on table public.specialist_time_off from public, anon, authenticated;
grant select on table public.specialist_time_off to authenticated, service_role;
