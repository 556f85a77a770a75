/**
 * What a specialist offers: rates, weekly working hours, exceptions to them,
 * and multi-session packages.
 */

-- ============================================================================
-- Tables
-- ============================================================================

/**
 * A specialist's price per session. Rates never overlap in time, so "the current
 * rate" (the one in effect now) is always a single row.
 */
create table public.specialist_rates (
  id uuid primary key default gen_random_uuid(),
  specialist_id uuid not null references public.profiles (id) on delete cascade,
  amount numeric(10, 2) not null constraint specialist_rates_amount_check check (amount >= 0),
  currency text not null default 'USD' constraint specialist_rates_currency_check check (currency ~ '^[A-Z]{3}$'),
  duration_minutes integer not null
    constraint specialist_rates_duration_check check (duration_minutes between 1 and 1440),
  effective_from timestamptz not null default now(),
  effective_to timestamptz, -- exclusive; null = open-ended
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint specialist_rates_period_check check (effective_to is null or effective_to > effective_from),
  constraint specialist_rates_no_overlap exclude using gist (
    specialist_id with =,
    tstzrange(effective_from, effective_to) with &&
  )
);

comment on table public.specialist_rates is 'Price and length of one session with a specialist, per period.';

/** Weekly working hours, in the specialist's own timezone (profiles.timezone). */
create table public.availability_windows (
  id uuid primary key default gen_random_uuid(),
  specialist_id uuid not null references public.profiles (id) on delete cascade,
  day_of_week smallint not null -- 0 = Sunday … 6 = Saturday
    constraint availability_windows_day_of_week_check check (day_of_week between 0 and 6),
  start_time time not null,
  end_time time not null,
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint availability_windows_time_check check (end_time > start_time)
);

create index availability_windows_specialist_idx on public.availability_windows (specialist_id, day_of_week);

/** Days or hours a specialist departs from the weekly windows (vacation, sick leave…). */
create table public.specialist_availability_exceptions (
  id uuid primary key default gen_random_uuid(),
  specialist_id uuid not null references public.profiles (id) on delete cascade,
  exception_date date not null,
  is_available boolean not null default false, -- false = unavailable; true = partially available
  reason text not null default 'other'
    constraint specialist_availability_exceptions_reason_check
    check (reason in ('vacation', 'sick_leave', 'personal', 'training', 'conference', 'other')),
  all_day boolean not null default true,
  start_time time, -- only when not all day
  end_time time,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint specialist_availability_exceptions_hours_check check (
    all_day or (start_time is not null and end_time is not null and start_time < end_time)
  )
);

-- The seed asks for a partial index on future dates; a predicate cannot use now(),
-- so one index on (specialist, date) serves "this specialist's exceptions from today".
create index specialist_availability_exceptions_specialist_date_idx
  on public.specialist_availability_exceptions (specialist_id, exception_date);
create index specialist_availability_exceptions_date_idx
  on public.specialist_availability_exceptions (exception_date);
create index specialist_availability_exceptions_unavailable_idx
  on public.specialist_availability_exceptions (specialist_id, exception_date)
  where not is_available;

/** Multi-session packages a specialist offers at a discount. */
create table public.booking_packages (
  id uuid primary key default gen_random_uuid(),
  specialist_id uuid not null references public.profiles (id) on delete cascade,
  name text not null constraint booking_packages_name_length check (char_length(name) between 1 and 200),
  description text constraint booking_packages_description_length check (char_length(description) <= 5000),
  session_count integer not null constraint booking_packages_session_count_check check (session_count > 0),
  price numeric(10, 2) not null constraint booking_packages_price_check check (price >= 0),
  currency text not null default 'USD' constraint booking_packages_currency_check check (currency ~ '^[A-Z]{3}$'),
  discount_percentage numeric(5, 2) not null default 0
    constraint booking_packages_discount_percentage_check check (discount_percentage between 0 and 100),
  valid_for_days integer constraint booking_packages_valid_for_days_check check (valid_for_days > 0),
  is_active boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index booking_packages_specialist_idx on public.booking_packages (specialist_id);
create index booking_packages_active_idx on public.booking_packages (is_active) where is_active;
create index booking_packages_created_at_idx on public.booking_packages (created_at desc);

-- ============================================================================
-- Functions
-- ============================================================================

/** The rate in effect at a moment (now by default), or nothing. */
create or replace function private.current_rate(specialist uuid, at_time timestamptz default now())
  returns public.specialist_rates
  language sql stable
  set search_path = ''
  as $$
  select r.* from public.specialist_rates r
  where r.specialist_id = specialist
    and r.effective_from <= at_time
    and (r.effective_to is null or r.effective_to > at_time)
$$;
grant execute on function private.current_rate(uuid, timestamptz) to service_role;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger specialist_rates_set_updated_at before update on public.specialist_rates
  for each row execute function private.set_updated_at();
create trigger availability_windows_set_updated_at before update on public.availability_windows
  for each row execute function private.set_updated_at();
create trigger specialist_availability_exceptions_set_updated_at before update on public.specialist_availability_exceptions
  for each row execute function private.set_updated_at();
create trigger booking_packages_set_updated_at before update on public.booking_packages
  for each row execute function private.set_updated_at();
