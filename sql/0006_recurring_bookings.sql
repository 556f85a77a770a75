/**
 * Recurring bookings: a client's standing arrangement with a specialist, turned
 * into sessions by the daily dispatcher. Unlike the seed's "always 10:00", each
 * recurrence carries its own local time of day, duration and timezone.
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table public.recurring_bookings (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references public.profiles (id) on delete cascade, -- the client
  specialist_id uuid not null references public.profiles (id) on delete cascade,
  frequency text not null
    constraint recurring_bookings_frequency_check check (frequency in ('weekly', 'biweekly', 'monthly')),
  start_date date not null,
  end_date date, -- inclusive; null = open-ended
  is_active boolean not null default true,
  next_booking_date date, -- the next occurrence still to create; defaults to start_date
  last_generated_date date, -- the occurrence date of the last session created
  start_time time not null default '10:00', -- local time of day in `timezone`
  duration_minutes integer -- defaults to the specialist's current rate's duration
    constraint recurring_bookings_duration_check check (duration_minutes between 1 and 1440),
  timezone text -- defaults to the specialist's timezone
    constraint recurring_bookings_timezone_check check (private.is_iana_timezone(timezone)),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint recurring_bookings_dates_check check (end_date is null or end_date >= start_date),
  constraint recurring_bookings_parties_check check (user_id <> specialist_id)
);

comment on table public.recurring_bookings is 'Standing weekly, biweekly or monthly bookings; the dispatcher makes their sessions.';

create index recurring_bookings_user_idx on public.recurring_bookings (user_id);
create index recurring_bookings_specialist_idx on public.recurring_bookings (specialist_id);
create index recurring_bookings_frequency_idx on public.recurring_bookings (frequency);
-- What the dispatcher reads every day: active recurrences that are due.
create index recurring_bookings_due_idx on public.recurring_bookings (next_booking_date)
  where is_active;

-- ============================================================================
-- Functions
-- ============================================================================

/** Fills the defaults that depend on other rows: next date, duration, timezone. */
create or replace function private.recurring_booking_defaults() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  new.next_booking_date := coalesce(new.next_booking_date, new.start_date);
  if new.timezone is null then
    select p.timezone into new.timezone from public.profiles p where p.id = new.specialist_id;
  end if;
  if new.duration_minutes is null then
    select r.duration_minutes into new.duration_minutes from private.current_rate(new.specialist_id) r;
    if new.duration_minutes is null then
      raise exception 'Specialist % has no current rate; give duration_minutes.', new.specialist_id
        using errcode = '23502';
    end if;
  end if;
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger recurring_bookings_defaults
  before insert on public.recurring_bookings
  for each row execute function private.recurring_booking_defaults();

create trigger recurring_bookings_set_updated_at
  before update on public.recurring_bookings
  for each row execute function private.set_updated_at();
