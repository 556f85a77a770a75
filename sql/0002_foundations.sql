/**
 * Extensions, private schema and the small helpers every later file uses.
 *
 * `private` holds everything the API must never expose directly (helpers,
 * sequences, bookkeeping). It is not in PostgREST's exposed schemas; the API
 * roles get USAGE on it only so that policies and views can call its helpers.
 */

-- ============================================================================
-- Default privileges: nothing is executable until granted explicitly
-- ============================================================================

alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

-- ============================================================================
-- Extensions
-- ============================================================================

create schema if not exists extensions;
-- btree_gist lets an exclusion constraint mix `=` on ids with `&&` on time ranges.
create extension if not exists btree_gist with schema extensions;

/**
 * pg_cron runs the daily dispatcher. It can only be created in the database named
 * by `cron.database_name`, so elsewhere (a scratch database, a server without the
 * package) the rest of the schema still applies and the scheduling files say so.
 */
do $$
begin
  if exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
    return;
  end if;
  if not exists (select from pg_catalog.pg_available_extensions where name = 'pg_cron') then
    raise notice 'pg_cron is not installed on this server; scheduled jobs are not created.';
  elsif current_database() <> coalesce(current_setting('cron.database_name', true), 'postgres') then
    raise notice 'pg_cron can only be created in database %; scheduled jobs are not created here.',
      coalesce(current_setting('cron.database_name', true), 'postgres');
  else
    create extension pg_cron;
  end if;
end
$$;

-- ============================================================================
-- Private schema
-- ============================================================================

create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to anon, authenticated, service_role;

-- ============================================================================
-- Functions
-- ============================================================================

/** Stamps `updated_at` on every update, so clients cannot forge it. */
create or replace function private.set_updated_at() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  new.updated_at := now();
  return new;
end
$$;

/**
 * Who is acting: the signed-in user, or the user a trusted function acts for.
 * Functions connecting as the service set `app.actor_id` for the transaction.
 */
create or replace function private.current_actor() returns uuid
  language sql stable
  set search_path = ''
  as $$
  select coalesce(nullif(current_setting('app.actor_id', true), '')::uuid, auth.uid())
$$;
grant execute on function private.current_actor() to authenticated, service_role;

/**
 * True for an IANA zone name such as Europe/London (or UTC). Abbreviations and
 * POSIX offsets ("EST", "UTC+3") are refused: they do not follow daylight saving.
 * Declared immutable for use in check constraints; zone names are only ever added.
 */
create or replace function private.is_iana_timezone(zone text) returns boolean
  language plpgsql immutable
  set search_path = ''
  as $$
begin
  -- Names only: "Europe/London-1" would be read as a POSIX rule with an offset.
  if zone is null or zone !~ '^(UTC|Etc/GMT[+-]?(1[0-4]|[0-9])|[A-Z][A-Za-z_]+(/[A-Za-z_][A-Za-z_-]*)+)$' then
    return false;
  end if;
  perform now() at time zone zone;
  return true;
exception when invalid_parameter_value then
  return false;
end
$$;
grant execute on function private.is_iana_timezone(text) to authenticated, service_role;

/**
 * Refuses the change a trigger is attached to, with the trigger's message (first
 * argument) and SQLSTATE (second; default TB004, "append-only").
 */
create or replace function private.refuse_change() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  raise exception '%', tg_argv[0] using errcode = coalesce(tg_argv[1], 'TB004');
end
$$;
