/**
 * Calendar deletions that must not be lost.
 *
 * When a session with a calendar event is cancelled, by whichever door (a
 * function, or a frontend inserting into booking_cancellations), a trigger queues
 * the event's deletion in the same transaction. The cancelling function tries it
 * right after commit; whatever fails stays here and is retried with backoff by a
 * scheduled job until Google confirms (404 and 410 count as done).
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table private.calendar_deletions (
  -- No foreign key: an event whose booking was rolled back is queued here too.
  session_id uuid primary key,
  calendar_id text not null, -- the specialist's calendar when the session was cancelled
  event_id text not null,
  specialist_email text, -- whose calendar to act as, with domain-wide delegation
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  last_error text,
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  reported_at timestamptz -- when a deletion failing for a day was reported to Sentry
);

comment on table private.calendar_deletions is 'Calendar events of cancelled sessions still to delete, with retry state.';

create index calendar_deletions_due_idx on private.calendar_deletions (next_attempt_at)
  where completed_at is null;

grant select, insert, update on table private.calendar_deletions to service_role;

/** Deletions still failing a day after the cancellation: what an operator must look at. */
create view private.calendar_deletions_stuck as
  select session_id, calendar_id, event_id, attempts, last_error, created_at, next_attempt_at
  from private.calendar_deletions
  where completed_at is null and created_at < now() - interval '1 day';

grant select on private.calendar_deletions_stuck to service_role;

-- ============================================================================
-- Functions
-- ============================================================================

/** Statement-level: queue the event of every session this statement cancelled. */
create or replace function private.queue_calendar_deletions() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into private.calendar_deletions (session_id, calendar_id, event_id, specialist_email)
  select n.id, coalesce(p.google_calendar_id, 'primary'), n.google_calendar_event_id, p.email
  from new_sessions n
  join old_sessions o on o.id = n.id
  join public.profiles p on p.id = n.specialist_id
  where n.status = 'cancelled'
    and o.status is distinct from 'cancelled'
    and n.google_calendar_event_id is not null
  on conflict (session_id) do nothing;
  return null;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger sessions_queue_calendar_deletions
  after update on public.sessions
  referencing old table as old_sessions new table as new_sessions
  for each statement execute function private.queue_calendar_deletions();
