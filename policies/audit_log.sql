/**
 * audit_log: admins read it; nobody writes it through the API (functions and
 * triggers do, as the service). Append-only for everyone.
 */

alter table public.audit_log enable row level security;

revoke all on table public.audit_log from public, anon, authenticated;
grant select on table public.audit_log to authenticated;
grant select, insert on table public.audit_log to service_role;

create policy "Admins can read the audit log"
  on public.audit_log for select to authenticated
  using ((select private.is_admin()));

revoke all on sequence public.audit_log_id_seq from public, anon, authenticated;
