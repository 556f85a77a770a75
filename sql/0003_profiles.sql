/**
 * Profiles: one per auth.users row, created by a trigger with role `client`.
 * The role decides who is a specialist or an admin, so nobody can raise their
 * own: only an admin (for someone else) or the service can change it.
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  role text not null default 'client'
    constraint profiles_role_check check (role in ('client', 'specialist', 'admin')),
  full_name text constraint profiles_full_name_length check (char_length(full_name) <= 200),
  email text constraint profiles_email_length check (char_length(email) <= 320),
  timezone text not null default 'UTC'
    constraint profiles_timezone_check check (private.is_iana_timezone(timezone)),
  google_calendar_id text -- the specialist's calendar; null means the account's "primary"
    constraint profiles_google_calendar_id_length check (char_length(google_calendar_id) <= 320),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.profiles is 'One row per user. role decides client, specialist or admin.';

-- Policies and the admin helper filter on role.
create index profiles_role_idx on public.profiles (role);

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Creates the profile of a new user. The role is always `client`: nothing a user
 * sends at sign-up (user_metadata) can make them a specialist or an admin.
 */
create or replace function private.handle_new_user() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into public.profiles (id, email, full_name, role)
  values (
    new.id,
    new.email,
    left(new.raw_user_meta_data ->> 'full_name', 200),
    'client'
  );
  return new;
end
$$;

/** True when the signed-in user's profile says admin. */
create or replace function private.is_admin() returns boolean
  language sql stable
  security definer
  set search_path = ''
  as $$
  select exists (
    select 1 from public.profiles
    where id = auth.uid() and role = 'admin'
  )
$$;
grant execute on function private.is_admin() to anon, authenticated, service_role;

/**
 * Guards `profiles.role` and `profiles.id`. Signed-in users (admins included)
 * never change a role through the API: roles change through the service, by an
 * operator. Column grants already keep `role` out of reach; this holds even
 * where grants are broader (Supabase's default grants to the API roles).
 */
create or replace function private.guard_profile_update() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if new.id is distinct from old.id then
    raise exception 'A profile''s id cannot be changed.' using errcode = '42501';
  end if;
  if new.role is distinct from old.role and current_user in ('anon', 'authenticated') then
    raise exception 'A user''s role cannot be changed through the API.' using errcode = '42501';
  end if;
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger on_auth_user_created
  after insert on auth.users
  for each row execute function private.handle_new_user();

create trigger profiles_guard_update
  before update on public.profiles
  for each row execute function private.guard_profile_update();

create trigger profiles_set_updated_at
  before update on public.profiles
  for each row execute function private.set_updated_at();
