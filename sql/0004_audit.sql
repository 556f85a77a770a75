/**
 * The audit log: what was done, by whom, to what, with which outcome.
 * Append-only for everyone: rows are never updated, deleted or truncated.
 * Values hold ids and states, never names, emails or notes.
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table public.audit_log (
  id bigint generated always as identity primary key,
  action text not null constraint audit_log_action_length check (char_length(action) between 1 and 100),
  actor_id uuid, -- null when the system itself acted (the scheduler)
  actor_role text, -- client, specialist, admin, service or system, as seen when acting
  entity_type text not null,
  entity_id uuid,
  old_values jsonb,
  new_values jsonb,
  status text not null default 'success'
    constraint audit_log_status_check check (status in ('success', 'success_with_errors', 'failure')),
  created_at timestamptz not null default now()
);

comment on table public.audit_log is 'Append-only record of every action taken on bookings.';

create index audit_log_entity_idx on public.audit_log (entity_type, entity_id);
create index audit_log_actor_idx on public.audit_log (actor_id);
create index audit_log_created_at_idx on public.audit_log (created_at desc);
create index audit_log_action_idx on public.audit_log (action, created_at desc);

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger audit_log_refuse_update_delete
  before update or delete on public.audit_log
  for each row execute function private.refuse_change('The audit log is append-only.');

create trigger audit_log_refuse_truncate
  before truncate on public.audit_log
  for each statement execute function private.refuse_change('The audit log is append-only.');
