/**
 * intake_forms: the session's client and specialist read whether the form is
 * complete (the consents and the submission time), admins too; nobody reads the
 * ciphertext, its nonce or its key version through the API (not even the service
 * role: it is useless without the key and only helps an attacker). The answers
 * are read decrypted through the intake-form function, which audits each read.
 * No API role writes: forms are submitted through the functions.
 */

alter table public.intake_forms enable row level security;

revoke all on table public.intake_forms from public, anon, authenticated, service_role;
grant select (id, booking_id, client_id, consent_treatment, consent_confidentiality, consent_data_processing,
              revision, submitted_at)
  on table public.intake_forms to authenticated, service_role;

create policy "Clients can read the status of their own intake forms"
  on public.intake_forms for select to authenticated
  using (client_id = (select auth.uid()));

create policy "Specialists can read the status of intake forms of their sessions"
  on public.intake_forms for select to authenticated
  using (booking_id in (select private.my_specialist_session_ids()));

create policy "Admins can read the status of every intake form"
  on public.intake_forms for select to authenticated
  using ((select private.is_admin()));
