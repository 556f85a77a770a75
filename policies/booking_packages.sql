/**
 * booking_packages: active packages are visible to everyone, signed in or not;
 * a specialist sees and manages their own (active or not); admins manage all.
 */

alter table public.booking_packages enable row level security;

revoke all on table public.booking_packages from public, anon, authenticated;
grant select on table public.booking_packages to anon;
grant select, delete on table public.booking_packages to authenticated;
grant insert (specialist_id, name, description, session_count, price, currency, discount_percentage,
              valid_for_days, is_active),
      update (name, description, session_count, price, currency, discount_percentage, valid_for_days, is_active)
  on table public.booking_packages to authenticated;
grant select, insert, update, delete on table public.booking_packages to service_role;

create policy "Visitors can read active packages"
  on public.booking_packages for select to anon
  using (is_active);

create policy "Signed-in users can read active packages"
  on public.booking_packages for select to authenticated
  using (is_active);

create policy "Specialists can read their own packages"
  on public.booking_packages for select to authenticated
  using (specialist_id = (select auth.uid()));

create policy "Admins can read every package"
  on public.booking_packages for select to authenticated
  using ((select private.is_admin()));

create policy "Specialists can add their own packages"
  on public.booking_packages for insert to authenticated
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can update their own packages"
  on public.booking_packages for update to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()))
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can delete their own packages"
  on public.booking_packages for delete to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Admins can add packages"
  on public.booking_packages for insert to authenticated
  with check ((select private.is_admin()) and private.is_specialist_profile(specialist_id));

create policy "Admins can update every package"
  on public.booking_packages for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

create policy "Admins can delete every package"
  on public.booking_packages for delete to authenticated
  using ((select private.is_admin()));
