/**
 * session_notes: the specialist who wrote them reads and edits them (for 24
 * hours; a trigger freezes them after); the client reads notes on their own
 * sessions; admins read all and alone may delete (every deletion is audited:
 * sql/0037_clinical_record_deletions.sql). A specialist writes notes
 * only on their own sessions, in their own name.
 */

alter table public.session_notes enable row level security;

revoke all on table public.session_notes from public, anon, authenticated;
grant select, delete on table public.session_notes to authenticated;
grant insert (booking_id, provider_id, notes, follow_up_actions, next_session_recommendation, metadata),
      update (notes, follow_up_actions, next_session_recommendation, metadata)
  on table public.session_notes to authenticated;
grant select, insert, update, delete on table public.session_notes to service_role;

create policy "Specialists can read their own notes"
  on public.session_notes for select to authenticated
  using (provider_id = (select auth.uid()));

create policy "Clients can read notes on their sessions"
  on public.session_notes for select to authenticated
  using (booking_id in (select private.my_client_session_ids()));

create policy "Admins can read every note"
  on public.session_notes for select to authenticated
  using ((select private.is_admin()));

create policy "Specialists can write notes on their own sessions"
  on public.session_notes for insert to authenticated
  with check (provider_id = (select auth.uid()) and private.is_session_specialist(booking_id));

create policy "Specialists can update their own notes"
  on public.session_notes for update to authenticated
  using (provider_id = (select auth.uid()))
  with check (provider_id = (select auth.uid()));

create policy "Admins can delete notes"
  on public.session_notes for delete to authenticated
  using ((select private.is_admin()));
