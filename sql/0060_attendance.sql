/**
 * Attendance and the kind of each cancellation: what happened to a session, so
 * that the practice's reports (sql/0061_session_analytics.sql) count and never guess.
 *
 * Attendance: after a session has ended, its specialist (or an admin) records
 * `attended` or `no_show` through the frontend's direct path (PostgREST: an
 * update of `sessions.attendance` alone, the only column of sessions an API role
 * may update). The database stamps who and when, refuses it before the end, on a
 * cancelled session, and 7 days after the end (then the record is final, like
 * notes after 24 hours), and writes every change to the audit log. Attendance is
 * not a status: booking_status_history stays status-only.
 *
 * Cancellations: every cancellation now says who cancelled (client, specialist,
 * admin, link — the client through the emailed link — or system) and whether it
 * was late: by the client, inside the practice's late-cancellation window
 * (practice_settings.late_cancellation_hours, default 48). Late is counted, not
 * refused; the minimum notice (cancellation_min_notice_hours) still refuses.
 */

-- ============================================================================
-- Settings
-- ============================================================================

alter table private.practice_settings
  -- A client's cancellation less than this many hours ahead is late (counted, not refused); 0 = never late.
  add column late_cancellation_hours integer not null default 48
    constraint practice_settings_late_cancellation_hours_check check (late_cancellation_hours between 0 and 8760);

-- ============================================================================
-- Tables
-- ============================================================================

alter table public.sessions
  -- What happened, recorded after the end: attended, no_show, or null (not recorded).
  add column attendance text
    constraint sessions_attendance_check check (attendance in ('attended', 'no_show')),
  add column attendance_recorded_by uuid references auth.users (id) on delete set null,
  add column attendance_recorded_at timestamptz,
  add constraint sessions_attendance_recorded_check check ((attendance is null) = (attendance_recorded_at is null)),
  add constraint sessions_attendance_confirmed_check check (attendance is null or status = 'confirmed');

comment on column public.sessions.attendance is
  'attended or no_show, recorded by the specialist (or an admin) after the end; final 7 days after the end.';

alter table public.booking_cancellations
  -- Who cancelled: the session's client (in the app), specialist, an admin, the client through
  -- the emailed link, or the system (no person).
  add column cancelled_by_party text
    constraint booking_cancellations_cancelled_by_party_check
    check (cancelled_by_party in ('client', 'specialist', 'admin', 'link', 'system')),
  -- A client's cancellation inside the practice's late-cancellation window.
  add column late boolean;

comment on column public.booking_cancellations.cancelled_by_party is
  'client, specialist, admin, link or system; filled by the database on insert.';
comment on column public.booking_cancellations.late is
  'True when the client cancelled less than practice_settings.late_cancellation_hours ahead; filled on insert.';

-- The cancellations made before this migration, classified as the trigger below would have.
update public.booking_cancellations c
   set cancelled_by_party = case
         when c.cancelled_by is null then 'system'
         when c.cancelled_by = s.client_id then 'client'
         when c.cancelled_by = s.specialist_id then 'specialist'
         when exists (select 1 from public.profiles p where p.id = c.cancelled_by and p.role = 'admin') then 'admin'
         else 'system'
       end,
       late = c.cancelled_by is not null and c.cancelled_by = s.client_id
              and s.starts_at < c.created_at + interval '48 hours'
  from public.sessions s
 where s.id = c.booking_id;

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Who cancelled and whether it was late, filled on every cancellation (after
 * booking_cancellations_check has refused what may not be cancelled and set
 * cancelled_by). Whatever a writer sends in these columns is replaced. The
 * emailed link is told apart by its channel (`app.channel = 'token-cancel'`,
 * shared/link_cancel.py): it acts as the client.
 */
create or replace function private.classify_cancellation() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  target public.sessions;
  late_hours integer := (private.practice_settings()).late_cancellation_hours;
begin
  select * into target from public.sessions where id = new.booking_id;
  new.cancelled_by_party := case
    when new.cancelled_by is null then 'system'
    when new.cancelled_by = target.client_id
      then case when current_setting('app.channel', true) = 'token-cancel' then 'link' else 'client' end
    when new.cancelled_by = target.specialist_id then 'specialist'
    when exists (select 1 from public.profiles p where p.id = new.cancelled_by and p.role = 'admin') then 'admin'
    else 'system'
  end;
  new.late := new.cancelled_by_party in ('client', 'link') and late_hours > 0
              and target.starts_at < new.created_at + make_interval(hours => late_hours);
  return new;
end
$$;

/**
 * Attendance rules, for every writer: recorded only on a confirmed session, only
 * after its end, and changeable (corrected, never cleared) until 7 days after
 * the end; who and when are stamped here and cannot be written. A new session
 * carries no attendance, except in an operator's import of past sessions (booking
 * rules off: private.booking_rules_bypassed). Every change goes to the audit log.
 */
create or replace function private.guard_attendance() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  actor uuid := private.current_actor();
  actor_role text;
begin
  if tg_op = 'INSERT' then
    if new.attendance is null and new.attendance_recorded_by is null and new.attendance_recorded_at is null
       or private.booking_rules_bypassed() then
      return new;
    end if;
    raise exception 'Attendance is recorded after a session has ended, not when it is booked.'
      using errcode = '23514';
  end if;
  if new.attendance is not distinct from old.attendance then
    if new.attendance_recorded_by is distinct from old.attendance_recorded_by
       or new.attendance_recorded_at is distinct from old.attendance_recorded_at then
      raise exception 'Who recorded attendance, and when, is set by the database.' using errcode = '42501';
    end if;
    return new;
  end if;
  if new.attendance is null then
    raise exception 'Attendance, once recorded, can be corrected but not cleared.' using errcode = '23514';
  end if;
  if new.status <> 'confirmed' then
    raise exception 'Session % is cancelled; attendance is recorded only for confirmed sessions.', old.id
      using errcode = 'TB020';
  end if;
  if now() < old.ends_at then
    raise exception 'Session % has not ended yet; attendance is recorded after it ends.', old.id
      using errcode = 'TB021';
  end if;
  if now() >= old.ends_at + interval '7 days' then
    raise exception 'Attendance can no longer be changed 7 days after the session ended.' using errcode = 'TB022';
  end if;
  new.attendance_recorded_by := actor;
  new.attendance_recorded_at := now();

  select p.role into actor_role from public.profiles p where p.id = actor;
  insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, old_values, new_values, status)
  values (
    case when old.attendance is null then 'attendance_recorded' else 'attendance_corrected' end,
    actor,
    coalesce(actor_role, case when actor is null then 'system' else 'service' end),
    'session',
    old.id,
    jsonb_build_object('attendance', old.attendance),
    jsonb_build_object('attendance', new.attendance,
                       'channel', coalesce(nullif(current_setting('app.channel', true), ''), 'database')),
    'success'
  );
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

-- After booking_cancellations_check (name order), which sets cancelled_by and refuses.
create trigger booking_cancellations_classify
  before insert on public.booking_cancellations
  for each row execute function private.classify_cancellation();

-- Only writes that touch attendance pay for it (a booking, a move or a cancellation does not).
create trigger sessions_attendance_guard
  before update of attendance, attendance_recorded_by, attendance_recorded_at on public.sessions
  for each row execute function private.guard_attendance();

create trigger sessions_attendance_guard_insert
  before insert on public.sessions
  for each row when (new.attendance is not null or new.attendance_recorded_by is not null
                     or new.attendance_recorded_at is not null)
  execute function private.guard_attendance();
