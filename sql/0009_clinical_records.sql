/**
 * Clinical records: the specialist's session notes and recording metadata.
 * The most sensitive data in the system; see policies/ for who may read them.
 */

-- ============================================================================
-- Tables
-- ============================================================================

/** A specialist's notes on one session. Frozen 24 hours after they are written. */
create table public.session_notes (
  id uuid primary key default gen_random_uuid(),
  booking_id uuid not null references public.sessions (id),
  provider_id uuid not null references public.profiles (id), -- the specialist who wrote them
  notes text constraint session_notes_notes_length check (char_length(notes) <= 100000),
  follow_up_actions text constraint session_notes_follow_up_actions_length check (char_length(follow_up_actions) <= 20000),
  next_session_recommendation text
    constraint session_notes_next_session_recommendation_length check (char_length(next_session_recommendation) <= 20000),
  metadata jsonb not null default '{}'::jsonb
    constraint session_notes_metadata_object check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.session_notes is 'Specialist notes per session; not editable 24 hours after creation.';

create index session_notes_booking_idx on public.session_notes (booking_id);
create index session_notes_provider_idx on public.session_notes (provider_id, created_at desc);
create index session_notes_created_at_idx on public.session_notes (created_at desc);
create index session_notes_updated_at_idx on public.session_notes (updated_at desc);

/** Metadata of a recorded session; the file itself lives in Storage. */
create table public.meeting_recordings (
  id uuid primary key default gen_random_uuid(),
  booking_id uuid not null references public.sessions (id),
  recording_url text constraint meeting_recordings_recording_url_length check (char_length(recording_url) <= 4096),
  storage_path text not null constraint meeting_recordings_storage_path_length check (char_length(storage_path) between 1 and 1024),
  duration_seconds integer constraint meeting_recordings_duration_check check (duration_seconds > 0),
  storage_size_bytes bigint constraint meeting_recordings_size_check check (storage_size_bytes > 0),
  file_format text not null
    constraint meeting_recordings_file_format_check check (file_format in ('mp4', 'webm', 'mov', 'mkv')),
  is_encrypted boolean not null default true,
  created_at timestamptz not null default now(),
  expires_at timestamptz, -- null = keep
  constraint meeting_recordings_expiry_check check (expires_at is null or expires_at > created_at)
);

create index meeting_recordings_booking_idx on public.meeting_recordings (booking_id);
create index meeting_recordings_created_at_idx on public.meeting_recordings (created_at desc);
create index meeting_recordings_expires_at_idx on public.meeting_recordings (expires_at)
  where expires_at is not null;

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Notes are written by the session's own specialist. A signed-in user cannot
 * choose the creation time (a future one would keep the note editable). Runs
 * with the writer's rights on purpose: `current_user` must be the API role, and
 * the session lookup goes through the writer's own view of sessions.
 */
create or replace function private.check_session_note() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if not exists (
    select 1 from public.sessions s
    where s.id = new.booking_id and s.specialist_id = new.provider_id
  ) then
    raise exception 'Notes on session % can only be written by its specialist.', new.booking_id
      using errcode = '42501';
  end if;
  if current_user in ('anon', 'authenticated') then
    new.created_at := now();
    new.updated_at := now();
  end if;
  return new;
end
$$;

/**
 * Frozen after 24 hours, for everyone: a clinical record must not change after
 * the fact. The creation time, session and author are fixed from the start.
 */
create or replace function private.guard_session_note_update() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if old.created_at <= now() - interval '24 hours' then
    raise exception 'Session notes can no longer be edited 24 hours after they were written.'
      using errcode = 'TB005';
  end if;
  if new.created_at is distinct from old.created_at
     or new.booking_id is distinct from old.booking_id
     or new.provider_id is distinct from old.provider_id then
    raise exception 'A note''s session, author and creation time cannot be changed.'
      using errcode = '42501';
  end if;
  new.updated_at := now();
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger session_notes_check
  before insert on public.session_notes
  for each row execute function private.check_session_note();

create trigger session_notes_guard_update
  before update on public.session_notes
  for each row execute function private.guard_session_note_update();
