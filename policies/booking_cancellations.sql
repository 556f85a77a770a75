/**
 * booking_cancellations: the parties of a session read its cancellation; the
 * client or the specialist of a confirmed, future session cancels it by
 * inserting a row in their own name (the trigger then cancels the session);
 * admins read all and may cancel any session in their own name. Immutable for
 * everyone: no update or delete grant, and triggers refuse them regardless.
 */

alter table public.booking_cancellations enable row level security;

revoke all on table public.booking_cancellations from public, anon, authenticated;
grant select on table public.booking_cancellations to authenticated;
grant insert (booking_id, cancelled_by, reason, cancellation_policy_applied)
  on table public.booking_cancellations to authenticated;
grant select, insert on table public.booking_cancellations to service_role;

create policy "Clients can read cancellations of their sessions"
  on public.booking_cancellations for select to authenticated
  using (booking_id in (select private.my_client_session_ids()));

create policy "Specialists can read cancellations of their sessions"
  on public.booking_cancellations for select to authenticated
  using (booking_id in (select private.my_specialist_session_ids()));

create policy "Admins can read every cancellation"
  on public.booking_cancellations for select to authenticated
  using ((select private.is_admin()));

create policy "Session parties can cancel their own sessions"
  on public.booking_cancellations for insert to authenticated
  with check (cancelled_by = (select auth.uid()) and private.is_session_party(booking_id));

create policy "Admins can cancel any session"
  on public.booking_cancellations for insert to authenticated
  with check (cancelled_by = (select auth.uid()) and (select private.is_admin()));

-- Anonymous sign-ins are nobody in particular: they never act as a person (sql/0038_access_hardening.sql).
create policy "Anonymous sign-ins cannot cancel sessions"
  on public.booking_cancellations as restrictive for insert to authenticated
  with check (not (select private.is_anonymous_sign_in()));
