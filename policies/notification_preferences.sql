/**
 * notification_preferences: each user reads and changes only their own row
 * (made with their profile, so nobody inserts or deletes one); the
 * notifications job (service) reads them all.
 */

alter table public.notification_preferences enable row level security;

revoke all on table public.notification_preferences from public, anon, authenticated;
grant select on table public.notification_preferences to authenticated;
grant update (reminders_enabled, muted_reminder_minutes) on table public.notification_preferences to authenticated;
grant select, insert, update, delete on table public.notification_preferences to service_role;

create policy "Users can read their own notification preferences"
  on public.notification_preferences for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Users can change their own notification preferences"
  on public.notification_preferences for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
