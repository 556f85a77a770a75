/**
 * Email: what must be sent is recorded by the database in the same transaction
 * as the change that causes it (an outbox), so nothing is lost when a function
 * dies after its commit, and every door (booking-create, the dispatcher, a
 * service insert, a cancellation by function, link or direct insert) is covered
 * by the same triggers.
 *
 * - A confirmed session inserted with its start ahead queues a confirmation to
 *   the client and a notice to the specialist (statement-level: the dispatcher's
 *   100,000-row insert pays one INSERT ... SELECT, not N calls).
 * - A cancellation queues a notice to both parties; a move of a confirmed
 *   session (starts_at or ends_at changed) queues an updated invitation to both.
 * - Reminders have no rows until they are due: `private.queue_due_reminders()`
 *   (called by the notifications job every minute) finds upcoming confirmed
 *   sessions whose reminder moment has come and writes one row each. Those rows
 *   are the sent-log: unique per (session, the start it was for, offset), so a
 *   moved session gets its reminders again for its new time, and a reminder is
 *   never queued twice. When several moments passed while the sender was down,
 *   only the latest is queued.
 *
 * The notifications function claims due rows with `for update skip locked`,
 * sends them over SMTP, and records the outcome here. Addresses are read from
 * auth.users when a message is sent, never stored, and never taken from a
 * profile field the user edits.
 */

-- ============================================================================
-- Settings
-- ============================================================================

-- Minutes before the start at which clients are reminded (REMINDER_OFFSETS_MINUTES=1440,120,15).
alter table private.practice_settings add column reminder_offsets_minutes integer[] not null default '{1440,120,15}'
  constraint practice_settings_reminder_offsets_minutes_check check (
    cardinality(reminder_offsets_minutes) <= 10
    and array_position(reminder_offsets_minutes, null) is null
    and 1 <= all (reminder_offsets_minutes)
    and 43200 >= all (reminder_offsets_minutes));

-- ============================================================================
-- Tables
-- ============================================================================

/**
 * Every email to send or sent: one row per message and recipient. The row id is
 * the message's identity (its Message-ID header is derived from it), so a retry
 * after a crash between sending and recording repeats the same message rather
 * than making a second one.
 */
create table private.email_outbox (
  id bigint generated always as identity primary key,
  kind text not null
    constraint email_outbox_kind_check
    check (kind in ('booking_confirmed', 'session_moved', 'booking_cancelled', 'reminder')),
  -- No foreign keys: each would cost the dispatcher a lookup per row; sessions are never deleted.
  session_id uuid not null,
  recipient_id uuid not null, -- an auth.users id; the address is read when sending
  for_starts_at timestamptz not null, -- the session's start this message is about
  offset_minutes integer, -- reminders: the offset (from the practice settings) they were due at
  ics_sequence integer not null default 0, -- SEQUENCE of the attached invitation
  status text not null default 'pending'
    constraint email_outbox_status_check check (status in ('pending', 'sent', 'failed', 'skipped')),
  -- When a pending message is due: creation, the end of a claim's lease, or the retry's backoff.
  next_attempt_at timestamptz not null default now(),
  attempts integer not null default 0,
  last_error text,
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  constraint email_outbox_reminder_offset_check check ((kind = 'reminder') = (offset_minutes is not null))
);

comment on table private.email_outbox is
  'Emails to send (pending) and their outcome (sent, failed for good, skipped); one row per message.';

-- The claim: the oldest due pending messages, an index scan however many are stored.
create index email_outbox_due_idx on private.email_outbox (next_attempt_at) where status = 'pending';
-- The reminders' sent-log, and its uniqueness under concurrent runs.
create unique index email_outbox_reminder_key on private.email_outbox (session_id, for_starts_at, offset_minutes)
  where kind = 'reminder';

-- What the health endpoint counts: messages refused for good.
create index email_outbox_failed_idx on private.email_outbox (created_at) where status = 'failed';

grant select, insert, update on table private.email_outbox to service_role;

/**
 * A user's choices about reminders (confirmations and cancellation notices are
 * always sent). Every user has one row, made with their profile; they change it
 * (PostgREST: update where user_id = me) and never need to create it.
 */
create table public.notification_preferences (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade
    constraint notification_preferences_user_id_key unique,
  reminders_enabled boolean not null default true, -- false: no reminders at all
  -- Reminders switched off by kind: the offsets in minutes (1440 = the 24-hour one).
  muted_reminder_minutes integer[] not null default '{}'
    constraint notification_preferences_muted_reminder_minutes_check check (
      cardinality(muted_reminder_minutes) <= 10
      and array_position(muted_reminder_minutes, null) is null
      and 1 <= all (muted_reminder_minutes)
      and 43200 >= all (muted_reminder_minutes)),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.notification_preferences is 'Per user: which reminder emails they want.';

-- When a session's start was last moved (null: never): a reminder whose moment
-- came before the session had this start is not due (a session booked or moved
-- to three hours ahead gets only the reminders still ahead of it).
alter table public.sessions add column start_set_at timestamptz;

-- Reminders look for confirmed sessions starting within the largest offset.
create index sessions_confirmed_starts_idx on public.sessions (starts_at) where status = 'confirmed';

-- ============================================================================
-- Functions
-- ============================================================================

/** Statement-level: a confirmation to the client and a notice to the specialist per new confirmed session. */
create or replace function private.queue_booking_emails() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into private.email_outbox (kind, session_id, recipient_id, for_starts_at)
  select 'booking_confirmed', n.id, r.recipient_id, n.starts_at
  from new_sessions n
  cross join lateral (values (n.client_id), (n.specialist_id)) r (recipient_id)
  where n.status = 'confirmed' and n.starts_at > now();
  return null;
end
$$;
grant execute on function private.queue_booking_emails() to service_role;

/**
 * Statement-level: a notice to both parties per session this statement
 * cancelled or moved. SEQUENCE (RFC 5545) must grow with each revision of the
 * invitation: the seconds since the session was created, plus one, grows
 * without reading earlier messages.
 */
create or replace function private.queue_change_emails() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into private.email_outbox (kind, session_id, recipient_id, for_starts_at, ics_sequence)
  select change.kind, n.id, r.recipient_id, n.starts_at,
         least(floor(extract(epoch from now() - n.created_at)), 2147483646)::integer + 1
  from new_sessions n
  join old_sessions o on o.id = n.id
  cross join lateral (
    select case
      when n.status = 'cancelled' and o.status = 'confirmed' then 'booking_cancelled'
      when n.status = 'confirmed' and o.status = 'confirmed'
           and (n.starts_at, n.ends_at) is distinct from (o.starts_at, o.ends_at) then 'session_moved'
    end as kind
  ) change
  cross join lateral (values (n.client_id), (n.specialist_id)) r (recipient_id)
  where change.kind is not null and n.starts_at > now();
  return null;
end
$$;
grant execute on function private.queue_change_emails() to service_role;

/** Remembers when a session's start was moved (see sessions.start_set_at). */
create or replace function private.stamp_start_set_at() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  new.start_set_at := now();
  return new;
end
$$;
grant execute on function private.stamp_start_set_at() to service_role;

/**
 * Queues the reminders that are due now, and returns how many. For each
 * confirmed session still ahead, the due reminder is the latest offset whose
 * moment has passed and came after the session got its start; it is queued
 * unless that one or a later one was already queued for this start, or the
 * client switched it off. Safe to run concurrently (the sent-log's unique key).
 */
create or replace function private.queue_due_reminders() returns integer
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  offsets integer[] := (private.practice_settings()).reminder_offsets_minutes;
  horizon integer := coalesce((select max(o) from unnest(offsets) o), 0);
  queued integer;
begin
  insert into private.email_outbox (kind, session_id, recipient_id, for_starts_at, offset_minutes)
  select 'reminder', s.id, s.client_id, s.starts_at, due.offset_minutes
  from public.sessions s
  cross join lateral (
    select min(o) as offset_minutes
    from unnest(offsets) o
    where s.starts_at - make_interval(mins => o) <= now()
      and s.starts_at - make_interval(mins => o) > coalesce(s.start_set_at, s.created_at)
  ) due
  left join public.notification_preferences p on p.user_id = s.client_id
  where s.status = 'confirmed'
    and s.starts_at > now()
    and s.starts_at <= now() + make_interval(mins => horizon)
    and due.offset_minutes is not null
    and coalesce(p.reminders_enabled, true)
    and not (due.offset_minutes = any (coalesce(p.muted_reminder_minutes, '{}')))
    and not exists (
      select 1 from private.email_outbox r
      where r.kind = 'reminder' and r.session_id = s.id and r.for_starts_at = s.starts_at
        and r.offset_minutes <= due.offset_minutes)
  on conflict do nothing;
  get diagnostics queued = row_count;
  return queued;
end
$$;
grant execute on function private.queue_due_reminders() to service_role;

/** Statement-level: every new profile gets its preferences row (all reminders on). */
create or replace function private.create_notification_preferences() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into public.notification_preferences (user_id)
  select n.id from new_profiles n
  on conflict (user_id) do nothing;
  return null;
end
$$;
grant execute on function private.create_notification_preferences() to service_role;

insert into public.notification_preferences (user_id)
select p.id from public.profiles p
on conflict (user_id) do nothing;

-- ============================================================================
-- Triggers (names of their own: other migrations add their own sessions triggers)
-- ============================================================================

create trigger sessions_queue_booking_emails
  after insert on public.sessions
  referencing new table as new_sessions
  for each statement execute function private.queue_booking_emails();

-- (A column list would spare other updates, but PostgreSQL allows none with transition tables.)
create trigger sessions_queue_change_emails
  after update on public.sessions
  referencing old table as old_sessions new table as new_sessions
  for each statement execute function private.queue_change_emails();

create trigger sessions_stamp_start_set_at
  before update of starts_at on public.sessions
  for each row when (new.starts_at is distinct from old.starts_at)
  execute function private.stamp_start_set_at();

create trigger profiles_create_notification_preferences
  after insert on public.profiles
  referencing new table as new_profiles
  for each statement execute function private.create_notification_preferences();

create trigger notification_preferences_set_updated_at before update on public.notification_preferences
  for each row execute function private.set_updated_at();

-- ============================================================================
-- The job: every minute
-- ============================================================================

do $$
begin
  if not exists (select from pg_catalog.pg_namespace where nspname = 'cron') then
    raise notice 'pg_cron is not installed in this database; the notifications job is not scheduled.';
    return;
  end if;
  perform cron.schedule('notifications', '* * * * *',
    $job$select private.call_function('notifications')$job$);
end
$$;
