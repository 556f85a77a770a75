/**
 * Practice settings: the numbers the booking rules depend on, kept where every
 * door can read them — in the database.
 *
 * The database is a door (PostgREST, the dispatcher, pg_cron), so a rule that
 * depends on a setting (minimum notice, maximum advance, the client's
 * cancellation notice) must read that setting here, not from one function's
 * environment. One row, typed columns with their own checks: a bad value is
 * refused with a plain sentence when it is written, never discovered when a
 * booking is made.
 *
 * Where values come from: the environment at deploy time. `therapy-db migrate`
 * (and `therapy-db settings`) write every variable of this table that is set in
 * its environment (BOOKING_MIN_NOTICE_HOURS → booking_min_notice_hours); an
 * unset variable leaves the stored value alone. Operators may also update the
 * row directly as the service role. Later migrations add their settings as
 * columns of this table (`alter table private.practice_settings add column …`).
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table private.practice_settings (
  singleton boolean primary key default true constraint practice_settings_singleton check (singleton),
  -- A booking must be made at least this many hours ahead.
  booking_min_notice_hours integer not null default 24
    constraint practice_settings_booking_min_notice_hours_check check (booking_min_notice_hours between 0 and 8760),
  -- A booking can be made at most this many days ahead.
  booking_max_advance_days integer not null default 30
    constraint practice_settings_booking_max_advance_days_check check (booking_max_advance_days between 1 and 3650),
  -- Clients must cancel (or move) a session at least this many hours ahead; 0 = no rule.
  cancellation_min_notice_hours integer not null default 0
    constraint practice_settings_cancellation_min_notice_hours_check
    check (cancellation_min_notice_hours between 0 and 8760),
  -- The recurring dispatcher creates occurrences up to this many days ahead.
  dispatch_horizon_days integer not null default 7
    constraint practice_settings_dispatch_horizon_days_check check (dispatch_horizon_days between 0 and 366),
  updated_at timestamptz not null default now()
);

comment on table private.practice_settings is
  'One row: the practice-wide numbers the booking rules read. Written by the service (therapy-db settings).';

insert into private.practice_settings default values;

revoke all on table private.practice_settings from public, anon, authenticated;
grant select, update on table private.practice_settings to service_role;

-- ============================================================================
-- Functions
-- ============================================================================

/** The practice settings row; what every rule reads. */
create or replace function private.practice_settings() returns private.practice_settings
  language sql stable
  security definer
  set search_path = ''
  as $$
  select s from private.practice_settings s
$$;
grant execute on function private.practice_settings() to service_role;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger practice_settings_set_updated_at before update on private.practice_settings
  for each row execute function private.set_updated_at();

create trigger practice_settings_refuse_delete
  before delete on private.practice_settings
  for each row execute function private.refuse_change('The practice settings row cannot be deleted; update it.');
