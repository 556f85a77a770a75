/**
 * booking_status_history: the parties of a session read its history; admins
 * read all. Written only by triggers; append-only for everyone.
 */

alter table public.booking_status_history enable row level security;

revoke all on table public.booking_status_history from public, anon, authenticated;
grant select on table public.booking_status_history to authenticated;
grant select, insert on table public.booking_status_history to service_role;

create policy "Clients can read the history of their sessions"
  on public.booking_status_history for select to authenticated
  using (session_id in (select private.my_client_session_ids()));

create policy "Specialists can read the history of their sessions"
  on public.booking_status_history for select to authenticated
  using (session_id in (select private.my_specialist_session_ids()));

create policy "Admins can read every status change"
  on public.booking_status_history for select to authenticated
  using ((select private.is_admin()));

revoke all on sequence public.booking_status_history_id_seq from public, anon, authenticated;
