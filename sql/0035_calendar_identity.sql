/**
 * Who Google believes we are: the identity used towards Google Calendar comes
 * only from data no user can write.
 *
 * - The delegation subject (GOOGLE_CALENDAR_DELEGATE=true: the service account
 *   acts as this Workspace user) is the specialist's verified sign-in email,
 *   `auth.users.email` once `email_confirmed_at` is set. Supabase Auth changes
 *   that address only after the new mailbox confirmed the change, so a
 *   specialist can name only a mailbox they own. `profiles.email` is the user's
 *   own contact field and is never used towards Google.
 * - The target calendar, `profiles.google_calendar_id`, is a mapping that only
 *   admins and the service set (a specialist asks an admin to point their
 *   sessions at a calendar shared with the service account).
 * - Queued deletions (`private.calendar_deletions`) carry the specialist's id;
 *   their subject is derived from it when queued, whatever the inserting code
 *   passes, and the rows already queued when this file runs are rewritten so.
 */

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * The address Google Calendar acts as for a specialist: their verified sign-in
 * email, or null (unverified, unknown). Called by the functions (as the service)
 * and by the deletion queue's trigger.
 */
create or replace function private.calendar_subject(specialist uuid) returns text
  language sql stable
  security definer
  set search_path = ''
  as $$
  select u.email::text
  from auth.users u
  where u.id = specialist
    and u.email_confirmed_at is not null
    and not coalesce(u.is_anonymous, false)
    and nullif(btrim(u.email), '') is not null
$$;
revoke execute on function private.calendar_subject(uuid) from public;
grant execute on function private.calendar_subject(uuid) to service_role;

/**
 * Only admins (and the service) choose which calendar a specialist's sessions
 * go to: a calendar id is an identity towards Google, like the role is one
 * towards us. Runs with the caller's rights on purpose (`current_user` must be
 * the API role).
 */
create or replace function private.guard_calendar_mapping() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if new.google_calendar_id is distinct from old.google_calendar_id
     and current_user in ('anon', 'authenticated')
     and not private.is_admin() then
    raise exception 'Only an admin can change which calendar a specialist''s sessions go to.'
      using errcode = '42501';
  end if;
  return new;
end
$$;

/**
 * Every queued deletion acts as the specialist's verified email: derived from
 * the row's specialist (or its session's), never taken from what was inserted.
 */
create or replace function private.derive_deletion_subject() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  if new.specialist_id is null then
    new.specialist_id := (select s.specialist_id from public.sessions s where s.id = new.session_id);
  end if;
  new.specialist_email := private.calendar_subject(new.specialist_id);
  return new;
end
$$;

/** Statement-level: queue the event of every session this statement cancelled (now with its specialist). */
create or replace function private.queue_calendar_deletions() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
begin
  insert into private.calendar_deletions (session_id, calendar_id, event_id, specialist_id)
  select n.id, coalesce(p.google_calendar_id, 'primary'), n.google_calendar_event_id, n.specialist_id
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
-- Tables
-- ============================================================================

alter table private.calendar_deletions
  add column specialist_id uuid; -- whose calendar; the subject (specialist_email) is derived from it

comment on column private.calendar_deletions.specialist_email is
  'Derived: the specialist''s verified auth email (private.calendar_subject), never user-written data.';

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger profiles_guard_calendar_mapping
  before update of google_calendar_id on public.profiles
  for each row execute function private.guard_calendar_mapping();

create trigger calendar_deletions_derive_subject
  before insert or update of specialist_id, specialist_email, session_id on private.calendar_deletions
  for each row execute function private.derive_deletion_subject();

-- ============================================================================
-- Data: deletions queued before this file ran
-- ============================================================================

-- Their subject was copied from profiles.email; the trigger above re-derives it.
update private.calendar_deletions
   set specialist_id = (select s.specialist_id from public.sessions s where s.id = session_id)
 where completed_at is null;
