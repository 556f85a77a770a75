/**
 * specialist_rates: prices are shown to every signed-in user; a specialist
 * manages their own rates; admins manage all.
 */

alter table public.specialist_rates enable row level security;

revoke all on table public.specialist_rates from public, anon, authenticated;
grant select, delete on table public.specialist_rates to authenticated;
grant insert (specialist_id, amount, currency, duration_minutes, effective_from, effective_to),
      update (amount, currency, duration_minutes, effective_from, effective_to)
  on table public.specialist_rates to authenticated;
grant select, insert, update, delete on table public.specialist_rates to service_role;

create policy "Signed-in users can read rates"
  on public.specialist_rates for select to authenticated
  using (true);

create policy "Specialists can add their own rates"
  on public.specialist_rates for insert to authenticated
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can update their own rates"
  on public.specialist_rates for update to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()))
  with check (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Specialists can delete their own rates"
  on public.specialist_rates for delete to authenticated
  using (specialist_id = (select auth.uid()) and (select private.is_specialist()));

create policy "Admins can add rates"
  on public.specialist_rates for insert to authenticated
  with check ((select private.is_admin()) and private.is_specialist_profile(specialist_id));

create policy "Admins can update every rate"
  on public.specialist_rates for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

create policy "Admins can delete every rate"
  on public.specialist_rates for delete to authenticated
  using ((select private.is_admin()));
