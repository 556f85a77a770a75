/**
 * Sessions (the seeds also call them bookings; every booking_id references
 * sessions.id) and their status history.
 *
 * The database itself guarantees that no specialist and no client ever has two
 * confirmed sessions that overlap: two exclusion constraints, checked at insert
 * time by the index, so a race between two bookings cannot slip past a
 * check-then-insert. Sessions are never deleted; cancelling sets the status.
 */

-- ============================================================================
-- Tables
-- ============================================================================

-- Human-readable booking references, BK-<year>-<number> as in seed 001.
create sequence private.booking_reference_seq;
grant usage on sequence private.booking_reference_seq to service_role;

/** BK-<year>-<number>: at least six digits, never truncated (FM999999999000000 pads, never cuts). */
create or replace function private.next_booking_reference() returns text
  language sql volatile
  set search_path = ''
  as $$
  select 'BK-' || to_char(now() at time zone 'UTC', 'YYYY') || '-'
         || to_char(nextval('private.booking_reference_seq'), 'FM999999999000000')
$$;
grant execute on function private.next_booking_reference() to service_role;

create table public.sessions (
  id uuid primary key default gen_random_uuid(),
  specialist_id uuid not null references public.profiles (id), -- the therapist
  client_id uuid not null references public.profiles (id),
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  status text not null default 'confirmed'
    constraint sessions_status_check check (status in ('confirmed', 'cancelled')),
  session_type text not null default 'initial'
    constraint sessions_session_type_check check (session_type in ('initial', 'follow_up', 'emergency')),
  special_requests text constraint sessions_special_requests_length check (char_length(special_requests) <= 2000),
  google_calendar_event_id text,
  booking_reference text not null
    default 'BK-' || to_char(now() at time zone 'UTC', 'YYYY') || '-'
            || to_char(nextval('private.booking_reference_seq'), 'FM999999999000000')
    constraint sessions_booking_reference_key unique,
  price numeric(10, 2) constraint sessions_price_check check (price >= 0), -- the rate when booked
  currency text constraint sessions_currency_check check (currency ~ '^[A-Z]{3}$'),
  recurring_booking_id uuid references public.recurring_bookings (id) on delete set null,
  occurrence_date date, -- the recurrence's date this session was made for
  cancelled_at timestamptz,
  cancelled_by uuid references auth.users (id) on delete set null,
  cancellation_reason text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint sessions_time_check check (ends_at > starts_at),
  constraint sessions_parties_check check (specialist_id <> client_id),
  constraint sessions_cancellation_check check ((status = 'cancelled') = (cancelled_at is not null)),
  -- A dispatcher-made session knows its occurrence; it keeps it if the recurrence is deleted.
  constraint sessions_occurrence_check check (recurring_booking_id is null or occurrence_date is not null),
  constraint sessions_recurring_occurrence_key unique (recurring_booking_id, occurrence_date),
  constraint sessions_no_specialist_overlap exclude using gist (
    specialist_id with =,
    tstzrange(starts_at, ends_at) with &&
  ) where (status = 'confirmed'),
  constraint sessions_no_client_overlap exclude using gist (
    client_id with =,
    tstzrange(starts_at, ends_at) with &&
  ) where (status = 'confirmed')
);

comment on table public.sessions is 'Booked sessions. Soft delete: cancelled sessions stay for the record.';

-- Access rules filter on the parties; upcoming lists sort by start.
create index sessions_specialist_starts_idx on public.sessions (specialist_id, starts_at);
create index sessions_client_starts_idx on public.sessions (client_id, starts_at);
create index sessions_recurring_booking_idx on public.sessions (recurring_booking_id)
  where recurring_booking_id is not null;

/** Every status change of a session: from, to, who, why, when. Append-only. */
create table public.booking_status_history (
  id bigint generated always as identity primary key,
  session_id uuid not null references public.sessions (id),
  from_status text, -- null for the session's first status
  to_status text not null,
  changed_by uuid, -- null when the system acted (the dispatcher)
  reason text,
  changed_at timestamptz not null default now()
);

create index booking_status_history_session_idx on public.booking_status_history (session_id, changed_at);

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Statement-level: one history row per new session, written as a single insert
 * per statement so that bulk creation (the dispatcher) pays one query, not N.
 */
create or replace function private.record_initial_status() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into public.booking_status_history (session_id, from_status, to_status, changed_by)
  select n.id, null, n.status, private.current_actor()
  from new_sessions n;
  return null;
end
$$;

/** Statement-level: one history row per session whose status changed. */
create or replace function private.record_status_change() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into public.booking_status_history (session_id, from_status, to_status, changed_by, reason)
  select n.id, o.status, n.status,
         coalesce(n.cancelled_by, private.current_actor()),
         case when n.status = 'cancelled' then n.cancellation_reason end
  from new_sessions n
  join old_sessions o on o.id = n.id
  where n.status is distinct from o.status;
  return null;
end
$$;

/**
 * Keeps a session's identity fixed and its status moving one way: a cancelled
 * session is never confirmed again, and cancelling goes through
 * booking_cancellations (whose trigger makes this update after inserting its
 * row), so every cancelled session has exactly one cancellation record.
 */
create or replace function private.guard_session_update() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  if new.id is distinct from old.id
     or new.specialist_id is distinct from old.specialist_id
     or new.client_id is distinct from old.client_id
     or new.booking_reference is distinct from old.booking_reference then
    raise exception 'A session''s id, parties and booking reference cannot be changed.'
      using errcode = '42501';
  end if;
  if old.status = 'cancelled' and new.status <> 'cancelled' then
    raise exception 'Session % is cancelled and cannot be confirmed again.', old.id
      using errcode = 'TB002';
  end if;
  if old.status = 'confirmed' and new.status = 'cancelled'
     and not exists (select 1 from public.booking_cancellations c where c.booking_id = old.id) then
    raise exception 'Sessions are cancelled by inserting a row into booking_cancellations.'
      using errcode = '42501';
  end if;
  new.updated_at := now();
  return new;
end
$$;

/**
 * Before a session is written as confirmed, the writer takes transaction locks
 * on both parties (in a fixed order), so two racing bookings queue instead of
 * deadlocking inside the exclusion constraints (each would otherwise wait for
 * the other's uncommitted index entry). A bulk writer (the dispatcher) sets
 * app.bulk_session_insert and serializes itself instead: one lock per row would
 * exhaust the lock table. The triggers' WHEN clauses keep bulk inserts free of
 * any per-row function call.
 */
create or replace function private.lock_session_parties() returns trigger
  language plpgsql
  set search_path = ''
  as $$
declare
  specialist_key bigint := hashtextextended('sessions.specialist:' || new.specialist_id::text, 0);
  client_key bigint := hashtextextended('sessions.client:' || new.client_id::text, 0);
begin
  perform pg_advisory_xact_lock(least(specialist_key, client_key));
  perform pg_advisory_xact_lock(greatest(specialist_key, client_key));
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

-- Sessions start confirmed: a cancelled one only ever comes from a cancellation.
create trigger sessions_refuse_cancelled_insert
  before insert on public.sessions
  for each row when (new.status = 'cancelled')
  execute function private.refuse_change(
    'Sessions are created confirmed; cancel them through booking_cancellations.', '23514');

create trigger sessions_lock_parties
  before insert or update of starts_at, ends_at, status on public.sessions
  for each row when (new.status = 'confirmed'
                     and current_setting('app.bulk_session_insert', true) is distinct from 'on')
  execute function private.lock_session_parties();

create trigger sessions_guard_update
  before update on public.sessions
  for each row execute function private.guard_session_update();

create trigger sessions_record_initial_status
  after insert on public.sessions
  referencing new table as new_sessions
  for each statement execute function private.record_initial_status();

create trigger sessions_record_status_change
  after update on public.sessions
  referencing old table as old_sessions new table as new_sessions
  for each statement execute function private.record_status_change();

create trigger booking_status_history_refuse_update_delete
  before update or delete on public.booking_status_history
  for each row execute function private.refuse_change('The booking status history is append-only.');

create trigger booking_status_history_refuse_truncate
  before truncate on public.booking_status_history
  for each statement execute function private.refuse_change('The booking status history is append-only.');

create trigger sessions_refuse_delete
  before delete on public.sessions
  for each row execute function private.refuse_change('Sessions are never deleted; cancel them instead.');

create trigger sessions_refuse_truncate
  before truncate on public.sessions
  for each statement execute function private.refuse_change('Sessions are never deleted; cancel them instead.');
