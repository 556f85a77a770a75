/**
 * Smaller access rules: anonymous sign-ins, and the size of a note's metadata.
 *
 * Supabase's anonymous sign-ins hold real `authenticated` tokens (claim
 * `is_anonymous: true`) and get a profile like anyone. Wherever a person's
 * identity matters (cancelling, recurring bookings, profile edits; an
 * anonymous sign-in is a client, so it writes no clinical records or
 * specialist data anyway), restrictive policies in policies/ refuse them with
 * the helper below; the functions refuse them too (shared/auth.py).
 *
 * Specialists' own hours, rates, exceptions and packages are written only while
 * the writer's profile still says specialist: the policies check the current
 * role (private.is_specialist()), not only ownership, so a demoted specialist
 * loses write access at once.
 */

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * True when the signed-in user is an anonymous sign-in: by the token's claim,
 * or by their auth.users row (the claim cannot be forged, the row cannot lag).
 */
create or replace function private.is_anonymous_sign_in() returns boolean
  language sql stable
  security definer
  set search_path = ''
  as $$
  select coalesce((auth.jwt() ->> 'is_anonymous')::boolean, false)
      or exists (select 1 from auth.users u where u.id = auth.uid() and u.is_anonymous)
$$;
grant execute on function private.is_anonymous_sign_in() to authenticated, service_role;

-- ============================================================================
-- Tables
-- ============================================================================

-- Metadata is a small JSON object (tags, durations), not a second notes field.
-- NOT VALID: rows written before this file stay readable; every new write is checked.
alter table public.session_notes
  add constraint session_notes_metadata_size check (octet_length(metadata::text) <= 8192) not valid;
