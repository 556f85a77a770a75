/**
 * recurring_bookings: the client and the specialist read theirs; the client
 * creates, changes and deletes their own (only in their own name, only with a
 * specialist); the specialist may end one aimed at them (the booking rules'
 * trigger allows them nothing else); admins manage all. Bookkeeping columns
 * (last_generated_date) are the dispatcher's alone; next_booking_date may be
 * given at creation (seed 002 does), checked against start_date and the cadence.
 */

alter table public.recurring_bookings enable row level security;

revoke all on table public.recurring_bookings from public, anon, authenticated;
grant select, delete on table public.recurring_bookings to authenticated;
grant insert (user_id, specialist_id, frequency, start_date, end_date, is_active, start_time,
              duration_minutes, timezone, next_booking_date),
      update (frequency, end_date, is_active, start_time, duration_minutes, timezone)
  on table public.recurring_bookings to authenticated;
grant select, insert, update, delete on table public.recurring_bookings to service_role;

create policy "Clients can read their own recurring bookings"
  on public.recurring_bookings for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Specialists can read their recurring bookings"
  on public.recurring_bookings for select to authenticated
  using (specialist_id = (select auth.uid()));

create policy "Admins can read every recurring booking"
  on public.recurring_bookings for select to authenticated
  using ((select private.is_admin()));

create policy "Clients can create their own recurring bookings"
  on public.recurring_bookings for insert to authenticated
  with check (user_id = (select auth.uid()) and private.is_specialist_profile(specialist_id));

create policy "Clients can update their own recurring bookings"
  on public.recurring_bookings for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

create policy "Specialists can end recurring bookings aimed at them"
  on public.recurring_bookings for update to authenticated
  using (specialist_id = (select auth.uid()))
  with check (specialist_id = (select auth.uid()));

create policy "Clients can delete their own recurring bookings"
  on public.recurring_bookings for delete to authenticated
  using (user_id = (select auth.uid()));

create policy "Admins can create recurring bookings"
  on public.recurring_bookings for insert to authenticated
  with check ((select private.is_admin()) and private.is_specialist_profile(specialist_id));

create policy "Admins can update every recurring booking"
  on public.recurring_bookings for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));

create policy "Admins can delete every recurring booking"
  on public.recurring_bookings for delete to authenticated
  using ((select private.is_admin()));

-- Anonymous sign-ins are nobody in particular: they never act as a person (sql/0038_access_hardening.sql).
create policy "Anonymous sign-ins cannot create recurring bookings"
  on public.recurring_bookings as restrictive for insert to authenticated
  with check (not (select private.is_anonymous_sign_in()));

create policy "Anonymous sign-ins cannot update recurring bookings"
  on public.recurring_bookings as restrictive for update to authenticated
  using (not (select private.is_anonymous_sign_in()))
  with check (not (select private.is_anonymous_sign_in()));

create policy "Anonymous sign-ins cannot delete recurring bookings"
  on public.recurring_bookings as restrictive for delete to authenticated
  using (not (select private.is_anonymous_sign_in()));
