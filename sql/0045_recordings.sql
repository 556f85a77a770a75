/**
 * Session recordings in Storage: where their files may sit, how long they are
 * kept, and the mark the expiry job leaves once a file is gone.
 *
 * The file of a recording lives in the Storage bucket (RECORDINGS_BUCKET,
 * default `meeting-recordings`) under `sessions/<yyyy-mm>/<session id>…`, the
 * month being the session's start (UTC). Nobody fetches it with a stored link:
 * the `recording-url` function signs a short-lived one per request (at most 24
 * hours, never past `expires_at`) for whoever the policies of
 * `meeting_recordings` let read the row, and audits each one. A signed URL is a
 * bearer credential, so none is ever stored: `recording_url` holds no link any
 * more (null, or an unsigned address kept for reference), and this file drops
 * any signed one found.
 *
 * Expiry: `expires_at` (filled from the practice's `recording_retention_days`
 * when the writer leaves it empty; null = keep) is when the file must go. The
 * `recording-expiry` job (pg_cron, daily) removes the files past it from
 * Storage, then stamps `deleted_at` in the same transaction that held the rows
 * locked: the row stays, as the record that there was a recording.
 */

-- ============================================================================
-- Settings
-- ============================================================================

-- Days a new recording is kept (expires_at = created_at + this); null = keep until someone sets expires_at.
alter table private.practice_settings add column recording_retention_days integer default null
  constraint practice_settings_recording_retention_days_check check (recording_retention_days between 1 and 3650);

-- ============================================================================
-- Tables
-- ============================================================================

-- Signed links are credentials: none stays at rest.
update public.meeting_recordings set recording_url = null
 where recording_url ~* '[?&](token|x-amz-signature|x-goog-signature|signature|sig)=';

alter table public.meeting_recordings
  add column deleted_at timestamptz, -- when the expiry job removed the Storage object (the row is kept)
  add constraint meeting_recordings_recording_url_unsigned
    check (recording_url !~* '[?&](token|x-amz-signature|x-goog-signature|signature|sig)='),
  add constraint meeting_recordings_deleted_after_expiry
    check (deleted_at is null or (expires_at is not null and deleted_at >= expires_at));

comment on column public.meeting_recordings.recording_url is
  'No link: null, or an unsigned address kept for reference. Signed links are made per request by recording-url and never stored.';
comment on column public.meeting_recordings.storage_path is
  'The object in the recordings bucket: sessions/<yyyy-mm of the session''s start, UTC>/<session id>[/._-]<name>.';
comment on column public.meeting_recordings.deleted_at is
  'When the expiry job removed the Storage object; the row stays as the record of the recording.';

-- What the expiry job scans: recordings whose object still exists, by expiry.
create index meeting_recordings_due_expiry_idx on public.meeting_recordings (expires_at)
  where deleted_at is null and expires_at is not null;

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Every door (the service's post-processing, an admin through the API): the
 * storage path must name the recording's own session under the bucket's
 * `sessions/<yyyy-mm>/` layout, so a row can never point at another session's
 * file; a new recording without `expires_at` gets the practice's retention.
 * Security definer: the session is looked up whoever writes.
 */
create or replace function private.check_meeting_recording() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  session_month text;
  retention integer;
begin
  if new.storage_path !~ '^sessions/[0-9]{4}-(0[1-9]|1[0-2])/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}([._/-][A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$'
     or new.storage_path ~ '(^|/)\.\.?(/|$)' then
    raise exception 'Recording path % must be sessions/<yyyy-mm>/<session id> followed by a file name.',
      new.storage_path using errcode = 'TR001';
  end if;
  select to_char(s.starts_at at time zone 'UTC', 'YYYY-MM') into session_month
    from public.sessions s where s.id = new.booking_id;
  if session_month is null then
    raise exception 'Session % does not exist.', new.booking_id using errcode = 'TB001';
  end if;
  if new.storage_path not like 'sessions/' || session_month || '/' || new.booking_id::text || '%' then
    raise exception 'Recording path % does not belong to session % (expected sessions/%/%…).',
      new.storage_path, new.booking_id, session_month, new.booking_id using errcode = 'TR002';
  end if;
  if tg_op = 'INSERT' then
    new.deleted_at := null;
    if new.expires_at is null then
      retention := (private.practice_settings()).recording_retention_days;
      if retention is not null then
        new.expires_at := coalesce(new.created_at, now()) + make_interval(days => retention);
      end if;
    end if;
  end if;
  return new;
end
$$;
grant execute on function private.check_meeting_recording() to authenticated, service_role;

/**
 * A recording whose object is gone keeps its row as a record, unchanged in
 * what it says about that object: neither its path, nor its expiry, nor the
 * deletion mark can be changed afterwards.
 */
create or replace function private.guard_deleted_recording() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if old.deleted_at is not null and (new.storage_path is distinct from old.storage_path
       or new.expires_at is distinct from old.expires_at or new.deleted_at is distinct from old.deleted_at) then
    raise exception 'Recording % was deleted from storage on %; its record cannot be changed.',
      old.id, old.deleted_at using errcode = 'TR003';
  end if;
  return new;
end
$$;
grant execute on function private.guard_deleted_recording() to authenticated, service_role;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger meeting_recordings_check_path
  before insert or update of booking_id, storage_path on public.meeting_recordings
  for each row execute function private.check_meeting_recording();

create trigger meeting_recordings_guard_deleted
  before update on public.meeting_recordings
  for each row execute function private.guard_deleted_recording();
