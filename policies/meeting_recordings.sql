/**
 * meeting_recordings: the parties of a session and admins read its recording's
 * metadata; only admins (post-processing) write it. Storage signed URLs govern
 * the file itself. Nobody deletes a row through the API: an admin sets
 * expires_at to now, and the service's expiry job removes the file, then the
 * row (sql/0037_clinical_record_deletions.sql audits and guards every delete).
 */

alter table public.meeting_recordings enable row level security;

revoke all on table public.meeting_recordings from public, anon, authenticated;
grant select on table public.meeting_recordings to authenticated;
grant insert (booking_id, recording_url, storage_path, duration_seconds, storage_size_bytes, file_format,
              is_encrypted, expires_at),
      update (recording_url, storage_path, duration_seconds, storage_size_bytes, file_format, is_encrypted,
              expires_at)
  on table public.meeting_recordings to authenticated;
grant select, insert, update, delete on table public.meeting_recordings to service_role;

create policy "Clients can read recordings of their sessions"
  on public.meeting_recordings for select to authenticated
  using (booking_id in (select private.my_client_session_ids()));

create policy "Specialists can read recordings of their sessions"
  on public.meeting_recordings for select to authenticated
  using (booking_id in (select private.my_specialist_session_ids()));

create policy "Admins can read every recording"
  on public.meeting_recordings for select to authenticated
  using ((select private.is_admin()));

create policy "Admins can add recordings"
  on public.meeting_recordings for insert to authenticated
  with check ((select private.is_admin()));

create policy "Admins can update recordings"
  on public.meeting_recordings for update to authenticated
  using ((select private.is_admin()))
  with check ((select private.is_admin()));
