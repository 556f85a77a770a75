/**
 * Booking cancellations: one per session, immutable for everyone.
 *
 * Inserting a row here IS the cancellation: in the same transaction the session
 * becomes `cancelled`, its history gets a row and the audit log records it. A
 * frontend inserting under RLS and the cancellation functions take this one path,
 * so the invariants live in one place.
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table public.booking_cancellations (
  id uuid primary key default gen_random_uuid(),
  booking_id uuid not null references public.sessions (id)
    constraint booking_cancellations_booking_id_key unique,
  cancelled_by uuid references auth.users (id), -- null only when the system cancelled
  reason text constraint booking_cancellations_reason_length check (char_length(reason) <= 1000),
  cancellation_policy_applied text not null default 'no_refund'
    constraint booking_cancellations_policy_check check (cancellation_policy_applied in ('no_refund')),
  created_at timestamptz not null default now()
);

comment on table public.booking_cancellations is 'One row per cancelled session; inserting it cancels the session.';

create index booking_cancellations_cancelled_by_idx on public.booking_cancellations (cancelled_by);
create index booking_cancellations_created_at_idx on public.booking_cancellations (created_at);

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Before the cancellation is stored: refuse a signed-in caller who is no party
 * to the session, lock the session (concurrent cancellations queue here, and all
 * but the first find it cancelled) and refuse a session that does not exist, is
 * already cancelled or has already started.
 */
create or replace function private.check_cancellation() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  target public.sessions;
begin
  -- A signed-in caller who is no party learns nothing about the session, not even
  -- whether it exists (its role setting survives security definer; current_user does not).
  if current_setting('role') in ('anon', 'authenticated')
     and not (private.is_session_party(new.booking_id) or private.is_admin()) then
    raise exception 'Only the session''s client or specialist can cancel it.' using errcode = '42501';
  end if;
  select * into target from public.sessions where id = new.booking_id for update;
  if not found then
    raise exception 'Session % does not exist.', new.booking_id using errcode = 'TB001';
  end if;
  if target.status = 'cancelled' then
    raise exception 'Session % is already cancelled.', new.booking_id using errcode = 'TB002';
  end if;
  if target.starts_at <= now() then
    raise exception 'Session % has already started and can no longer be cancelled.', new.booking_id
      using errcode = 'TB003';
  end if;
  new.cancelled_by := coalesce(new.cancelled_by, private.current_actor());
  new.created_at := now();
  new.reason := nullif(btrim(new.reason), '');
  return new;
end
$$;

/** After the cancellation is stored: cancel the session and audit it. */
create or replace function private.apply_cancellation() returns trigger
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  actor_role text;
begin
  update public.sessions
     set status = 'cancelled',
         cancelled_at = new.created_at,
         cancelled_by = new.cancelled_by,
         cancellation_reason = new.reason
   where id = new.booking_id;

  select p.role into actor_role from public.profiles p where p.id = new.cancelled_by;
  insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, old_values, new_values, status)
  values (
    'session_cancelled',
    new.cancelled_by,
    coalesce(actor_role, 'system'),
    'session',
    new.booking_id,
    jsonb_build_object('status', 'confirmed'),
    jsonb_build_object(
      'status', 'cancelled',
      'cancellation_id', new.id,
      'channel', coalesce(nullif(current_setting('app.channel', true), ''), 'database')
    ),
    'success'
  );
  return null;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger booking_cancellations_check
  before insert on public.booking_cancellations
  for each row execute function private.check_cancellation();

create trigger booking_cancellations_apply
  after insert on public.booking_cancellations
  for each row execute function private.apply_cancellation();

create trigger booking_cancellations_refuse_update_delete
  before update or delete on public.booking_cancellations
  for each row execute function private.refuse_change('Booking cancellations are permanent and cannot be changed or deleted.');

create trigger booking_cancellations_refuse_truncate
  before truncate on public.booking_cancellations
  for each statement execute function private.refuse_change('Booking cancellations are permanent and cannot be changed or deleted.');
