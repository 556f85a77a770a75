/**
 * Failed cancellation-link attempts, to slow down anyone guessing links.
 * Callers are kept as a keyed hash of their address, never the address itself.
 */

-- ============================================================================
-- Tables
-- ============================================================================

create table private.cancel_link_failures (
  id bigint generated always as identity primary key,
  client_key text not null, -- HMAC of the caller's address
  failed_at timestamptz not null default now()
);

create index cancel_link_failures_client_idx on private.cancel_link_failures (client_key, failed_at);
create index cancel_link_failures_failed_at_idx on private.cancel_link_failures (failed_at);

grant select, insert, delete on table private.cancel_link_failures to service_role;
