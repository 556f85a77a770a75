/**
 * What every dispatched session and every moved-on recurrence pays, made smaller
 * where it bought nothing (measured by `python -m tests.bench.dispatch --breakdown`):
 *
 * - sessions_recurring_booking_idx duplicated the leading column of the unique
 *   key (recurring_booking_id, occurrence_date), which serves the same lookups
 *   (the foreign key's ON DELETE SET NULL, a recurrence's sessions); each
 *   session paid one more index entry for it.
 * - The IANA-name check on recurring_bookings.timezone ran on every update of
 *   the row, even when the timezone was not written: the dispatcher moving 100,000
 *   recurrences on paid ~0.35 s for it (the check needs a PL/pgSQL exception block per
 *   call). It is now a trigger on insert and on updates that write the column, with the
 *   same SQLSTATE (23514), message and constraint name as the check it replaces.
 */

-- ============================================================================
-- Indexes
-- ============================================================================

drop index public.sessions_recurring_booking_idx;

-- ============================================================================
-- Functions
-- ============================================================================

/** Refuses a timezone that is not an IANA zone name, exactly as a check constraint would. */
create or replace function private.check_recurring_booking_timezone() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if not private.is_iana_timezone(new.timezone) then
    raise exception 'new row for relation "%" violates check constraint "%"', tg_table_name, tg_name
      using errcode = 'check_violation', constraint = tg_name, table = tg_table_name, schema = tg_table_schema,
            detail = 'Timezones are IANA zone names, such as Europe/London.';
  end if;
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

alter table public.recurring_bookings drop constraint recurring_bookings_timezone_check;

-- Named after the check it replaces; it runs after recurring_bookings_defaults
-- (triggers fire in name order), which fills a missing timezone from the specialist.
create trigger recurring_bookings_timezone_check
  before insert or update of timezone on public.recurring_bookings
  for each row execute function private.check_recurring_booking_timezone();

-- ============================================================================
-- The dispatcher
-- ============================================================================

-- Its sorts, hashes and the new sessions' transition table (read by the status
-- history trigger) spilled to temporary files at the default 4 MB from about
-- 20,000 occurrences; 64 MB keeps 100,000 in memory, once a day.
alter function private.dispatch_recurring_bookings(timestamptz, integer, boolean) set work_mem = '64MB';
