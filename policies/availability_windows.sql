/**
 * availability_windows: weekly hours are shown to every signed-in user; a
 * specialist manages their own; admins manage all.
 */

alter table public.availability_windows enable row level security;

revoke all on table public.availability_windows from public, anon, authenticated;
grant select, delete on table public.availability_windows to authenticated;
grant insert (specialist_id, day_of_week, start_time, end_time, is_active),
      update (day_of_week, start_time, end_time, is_active)
  on table public.availability_windows to authenticated;
grant select, insert, update, delete on table public.availability_windows to service_role;

create policy "Signed-in users can read availability windows"
  on public.availability_windows for select to authenticated
  using (true);

create policy "Specialists can add their own availability windows"
  on public.availability_windows for insert to authenticated
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can update their own availability windows"
  on public.availability_windows for update to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()))
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can delete their own availability windows"
  on public.availability_windows for delete to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Admins can add availability windows"
  on public.availability_windows for insert to authenticated
  with check ((select private.is_admin()) and private.is_specialist_profile(specialist_id));

create policy "Admins can update every availability window"
  on public.availability_windows for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

create policy "Admins can delete every availability window"
  on public.availability_windows for delete to authenticated
  using ((select private.is_admin()));
