/**
 * Rescheduling: a session moves in place.
 *
 * A move is an update of a confirmed session's starts_at/ends_at: its id,
 * booking reference, calendar event and email UID stay. The booking rules
 * already apply to it (sessions_rules: private.slot_problem with the session's
 * own row ignored, so a move by 15 minutes works; the exclusion constraints
 * hold the slot against racing writers, and one UPDATE releases the old slot
 * and takes the new one, so there is no moment where both or neither are held).
 * This file adds, for every door that moves a session (booking-reschedule, the
 * emailed link, a service update):
 *
 *  - the move's own rules: only a confirmed session that has not started moves,
 *    and its client may not move it inside the practice's minimum cancellation
 *    notice (otherwise move-then-cancel would bypass that notice);
 *  - the record of the move in audit_log (old and new times, who, through which
 *    door, why: the writer puts its reason in `app.move_reason` for the
 *    transaction); the status history stays for status changes only;
 *  - the calendar patch that must not be lost: queued in the same transaction,
 *    tried right after the commit, retried with backoff by calendar-sync. A
 *    later move supersedes a queued patch (one row per session, the latest times);
 *    a cancellation supersedes it too (the event is deleted instead).
 *
 * Emails need nothing here: sessions_queue_change_emails (sql/0050) queues the
 * "moved" notice, and reminders are keyed by the start (start_set_at).
 */

-- ============================================================================
-- Tables
-- ============================================================================

/**
 * Calendar events of moved sessions still to move, with retry state: one row per
 * session, holding the latest times it must show. A later move rewrites the row
 * (due again at once, attempts back to 0); a cancellation completes it.
 */
create table private.calendar_patches (
  -- No foreign key, as private.calendar_deletions: the queue outlives nothing it points at.
  session_id uuid primary key,
  specialist_id uuid not null, -- whose calendar; the subject is derived when sending (private.calendar_subject)
  calendar_id text not null, -- the specialist's calendar when the session was moved
  event_id text not null,
  starts_at timestamptz not null, -- the times the event must show
  ends_at timestamptz not null,
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  last_error text,
  created_at timestamptz not null default now(),
  queued_at timestamptz not null default now(), -- the latest move
  completed_at timestamptz,
  reported_at timestamptz, -- when a patch failing for a day was reported to Sentry
  constraint calendar_patches_time_check check (ends_at > starts_at)
);

comment on table private.calendar_patches is 'Calendar events of moved sessions still to move, with retry state.';

create index calendar_patches_due_idx on private.calendar_patches (next_attempt_at) where completed_at is null;

grant select, insert, update on table private.calendar_patches to service_role;

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Before a session's time changes: only a confirmed session that has not started
 * moves, and its client (the actor, whichever door) not inside the practice's
 * minimum cancellation notice; the specialist, an admin and the system may.
 * Trusted writers with the booking rules off (imports) are exempt.
 */
create or replace function private.check_session_move() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  notice_hours integer := (private.practice_settings()).cancellation_min_notice_hours;
begin
  if private.booking_rules_bypassed() then
    return new;
  end if;
  if old.status = 'cancelled' then
    raise exception 'Session % is cancelled and cannot be moved.', old.id using errcode = 'TB002';
  end if;
  if old.status <> 'confirmed' then
    raise exception 'Session % is not confirmed and cannot be moved.', old.id using errcode = 'TB002';
  end if;
  if old.starts_at <= now() then
    raise exception 'Session % has already started and can no longer be moved.', old.id using errcode = 'TB003';
  end if;
  if notice_hours > 0 and private.current_actor() = old.client_id
     and old.starts_at < now() + make_interval(hours => notice_hours) then
    raise exception 'Sessions must be moved at least % hours ahead; please contact your specialist.',
      notice_hours using errcode = 'TB006';
  end if;
  return new;
end
$$;
grant execute on function private.check_session_move() to service_role;

/**
 * After a session's time changed: the move in the audit log (old and new times,
 * who, the door, the writer's reason), and, for a confirmed session with a
 * calendar event, its patch queued (or the queued one replaced by these times).
 */
create or replace function private.record_session_move() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  actor uuid := private.current_actor();
  actor_role text;
begin
  select p.role into actor_role from public.profiles p where p.id = actor;
  insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, old_values, new_values)
  values (
    'session_moved', actor, coalesce(actor_role, 'system'), 'session', new.id,
    jsonb_build_object('starts_at', old.starts_at, 'ends_at', old.ends_at),
    jsonb_build_object(
      'starts_at', new.starts_at, 'ends_at', new.ends_at,
      'reason', nullif(btrim(current_setting('app.move_reason', true)), ''),
      'channel', coalesce(nullif(current_setting('app.channel', true), ''), 'database')));
  if new.status = 'confirmed' and new.google_calendar_event_id is not null then
    insert into private.calendar_patches (session_id, specialist_id, calendar_id, event_id, starts_at, ends_at)
    select new.id, new.specialist_id, coalesce(p.google_calendar_id, 'primary'), new.google_calendar_event_id,
           new.starts_at, new.ends_at
    from public.profiles p where p.id = new.specialist_id
    on conflict (session_id) do update
      set specialist_id = excluded.specialist_id, calendar_id = excluded.calendar_id,
          event_id = excluded.event_id, starts_at = excluded.starts_at, ends_at = excluded.ends_at,
          attempts = 0, next_attempt_at = now(), last_error = null, queued_at = now(),
          completed_at = null, reported_at = null;
  end if;
  return null;
end
$$;
grant execute on function private.record_session_move() to service_role;

/** A cancelled session's queued patch is done: its event is deleted instead (private.calendar_deletions). */
create or replace function private.supersede_calendar_patch() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  update private.calendar_patches
     set completed_at = now(), last_error = 'Superseded: the session was cancelled and its event is deleted.'
   where session_id = new.id and completed_at is null;
  return null;
end
$$;
grant execute on function private.supersede_calendar_patch() to service_role;

-- ============================================================================
-- Triggers (row-level, with column lists: the dispatcher's bulk writes never move times)
-- ============================================================================

-- Fires first of the BEFORE triggers on a move (name order): a refused move costs no lock.
create trigger sessions_check_move
  before update of starts_at, ends_at on public.sessions
  for each row when ((new.starts_at, new.ends_at) is distinct from (old.starts_at, old.ends_at))
  execute function private.check_session_move();

create trigger sessions_record_move
  after update of starts_at, ends_at on public.sessions
  for each row when ((new.starts_at, new.ends_at) is distinct from (old.starts_at, old.ends_at))
  execute function private.record_session_move();

create trigger sessions_supersede_calendar_patch
  after update of status on public.sessions
  for each row when (new.status = 'cancelled' and old.status is distinct from 'cancelled')
  execute function private.supersede_calendar_patch();
