/**
 * Intake forms (seed 001's four steps) and the client's three consents.
 *
 * The answers are encrypted by the functions (AES-256-GCM, shared/intake/) before
 * they reach the database: a row holds the nonce, the ciphertext and the version
 * of the key that wrote it, never the answers. The associated data of the
 * encryption names the session and the client, so a ciphertext copied to another
 * row does not decrypt. The consents and the submission time stay readable (by
 * the session's parties, under RLS; see policies/intake_forms.sql) so a frontend
 * can show "intake complete" without the key.
 */

-- ============================================================================
-- Tables
-- ============================================================================

/**
 * One intake form per session. A new submission replaces the previous one in
 * place (revision + 1): the older answers are not kept. From the session's start
 * on the form is frozen: only re-encryption under a newer key may touch it.
 */
create table public.intake_forms (
  id uuid primary key default gen_random_uuid(),
  booking_id uuid not null references public.sessions (id)
    constraint intake_forms_one_per_session unique,
  client_id uuid not null references public.profiles (id), -- the session's client, who submitted it
  consent_treatment boolean not null,
  consent_confidentiality boolean not null,
  consent_data_processing boolean not null,
  key_version integer not null constraint intake_forms_key_version_check check (key_version > 0),
  nonce bytea not null constraint intake_forms_nonce_length check (octet_length(nonce) = 12),
  -- AES-256-GCM output: the encrypted answers followed by the 16-byte tag
  ciphertext bytea not null
    constraint intake_forms_ciphertext_length check (octet_length(ciphertext) between 17 and 262144),
  revision integer not null default 1 constraint intake_forms_revision_check check (revision > 0),
  submitted_at timestamptz not null default now(), -- time of the latest submission
  constraint intake_forms_consents_given
    check (consent_treatment and consent_confidentiality and consent_data_processing)
);

comment on table public.intake_forms is
  'Encrypted intake answers per session; consents and submission time readable by the session''s parties.';

create index intake_forms_client_idx on public.intake_forms (client_id);
-- the re-encryption command walks the rows not yet under the newest key
create index intake_forms_key_version_idx on public.intake_forms (key_version, id);

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Whoever writes (a function, an operator's script): the form belongs to the
 * session's client, and the session must be confirmed and not yet started.
 * Re-encryption (an update that keeps the revision, the submission time, the
 * session and the client) does not come here: the update trigger's WHEN clause
 * lets it through at any time, without a lookup per row.
 */
create or replace function private.guard_intake_form() returns trigger
  language plpgsql
  set search_path = ''
  as $$
declare
  session record;
begin
  if tg_op = 'UPDATE' and (new.booking_id <> old.booking_id or new.client_id <> old.client_id) then
    raise exception 'An intake form''s session and client cannot be changed.' using errcode = '42501';
  end if;
  select s.client_id, s.status, s.starts_at into session
    from public.sessions s where s.id = new.booking_id;
  if not found then
    raise exception 'Session % does not exist.', new.booking_id using errcode = 'TB001';
  end if;
  if session.client_id <> new.client_id then
    raise exception 'Only the session''s client can submit its intake form.' using errcode = '42501';
  end if;
  if session.status = 'cancelled' then
    raise exception 'Session % is cancelled.', new.booking_id using errcode = 'TB002';
  end if;
  if session.starts_at <= now() then
    raise exception 'The intake form of session % is frozen: the session has started.', new.booking_id
      using errcode = 'TB003';
  end if;
  return new;
end
$$;

-- ============================================================================
-- Triggers
-- ============================================================================

create trigger intake_forms_guard_insert
  before insert on public.intake_forms
  for each row execute function private.guard_intake_form();

create trigger intake_forms_guard_update
  before update on public.intake_forms
  for each row
  when (new.revision is distinct from old.revision or new.submitted_at is distinct from old.submitted_at
        or new.booking_id is distinct from old.booking_id or new.client_id is distinct from old.client_id)
  execute function private.guard_intake_form();

