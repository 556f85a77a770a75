/**
 * Clinical records are never deleted without trace.
 *
 * - Every deletion of a session note or a recording's row, by any door (the
 *   API as an admin, the service, a maintenance connection), writes an audit
 *   row in the same transaction: who, which record, of which session, written
 *   when. Never the note's text: the audit log holds ids and states only.
 *   Truncating either table is refused.
 * - A recording's row never disappears while its file may still be in Storage.
 *   Through the API nobody deletes a recording row (admins included): an admin
 *   "deletes" a recording by setting `expires_at` to now, and the recordings
 *   expiry job (run by the service) removes the Storage object first and the
 *   row after. Where Supabase Storage's own table is in this database
 *   (`storage.objects`), deleting a row whose object is still there is refused
 *   for the service too.
 */

-- ============================================================================
-- Functions
-- ============================================================================

/** Audits the deletion of a session note or a recording's row (ids and times only). */
create or replace function private.audit_clinical_record_deletion() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  actor uuid := private.current_actor();
  kind text := case tg_table_name when 'session_notes' then 'session_note' else 'meeting_recording' end;
begin
  insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, old_values, new_values, status)
  values (
    kind || '_deleted',
    actor,
    coalesce((select p.role from public.profiles p where p.id = actor),
             case when current_user in ('anon', 'authenticated') then 'unknown' else 'service' end),
    kind,
    old.id,
    (select jsonb_object_agg(f.key, f.value) from jsonb_each(to_jsonb(old)) f
     where f.key = any (case kind
                          when 'session_note' then array['booking_id', 'provider_id', 'created_at', 'updated_at']
                          else array['booking_id', 'storage_path', 'created_at', 'expires_at'] end)),
    jsonb_build_object('channel', coalesce(nullif(current_setting('app.channel', true), ''), 'database')),
    'success'
  );
  return old;
end
$$;

/**
 * A recording's row goes only after its file: never through the API, and
 * never while Storage still lists the object (when Storage shares this database).
 */
create or replace function private.guard_recording_deletion() returns trigger
  language plpgsql
  set search_path = ''
  as $$
declare
  file_present boolean := false;
begin
  if current_user in ('anon', 'authenticated') then
    raise exception 'Recordings cannot be deleted through the API; set expires_at to now and the expiry job removes the file, then the row.'
      using errcode = '42501';
  end if;
  if to_regclass('storage.objects') is not null then
    execute 'select exists (select from storage.objects o where o.name = $1 or o.bucket_id || ''/'' || o.name = $1)'
      into file_present using old.storage_path;
  end if;
  if file_present then
    raise exception 'Recording % still has its file in Storage; remove the file first.', old.id
      using errcode = '55000';
  end if;
  return old;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger meeting_recordings_guard_delete
  before delete on public.meeting_recordings
  for each row execute function private.guard_recording_deletion();

create trigger meeting_recordings_audit_delete
  after delete on public.meeting_recordings
  for each row execute function private.audit_clinical_record_deletion();

create trigger session_notes_audit_delete
  after delete on public.session_notes
  for each row execute function private.audit_clinical_record_deletion();

create trigger meeting_recordings_refuse_truncate
  before truncate on public.meeting_recordings
  for each statement execute function private.refuse_change('Recordings are removed one by one, audited, never truncated.');

create trigger session_notes_refuse_truncate
  before truncate on public.session_notes
  for each statement execute function private.refuse_change('Session notes are deleted one by one, audited, never truncated.');
