/**
 * The service key at rest and on the wire, for scheduled calls.
 *
 * On plain PostgreSQL the `net.http_post` stand-in (sql/0013_scheduled_calls.sql)
 * now behaves like Supabase's pg_net where credentials are concerned:
 * - credential headers (`Authorization`, `apikey`) are sent but never stored:
 *   the request queue keeps `[redacted]` in their place (rows queued before this
 *   file ran are scrubbed too);
 * - redirects are never followed: a 3xx answer is recorded as the call's
 *   outcome (and counts as failed in private.scheduled_call_results), so the
 *   key is never re-sent to wherever a Location header points.
 *
 * The stand-in `vault` schema is for development only: it keeps secrets in
 * plain text in `vault.secrets`, readable by the database owner and by anyone
 * with a backup or a superuser connection. Supabase's Vault (the
 * supabase_vault extension) stores them encrypted with authenticated
 * encryption under a key held outside the database (pgsodium's root key, not
 * in backups or replication streams), and only decrypts them in
 * `vault.decrypted_secrets` for roles allowed to read that view.
 *
 * Supabase's new API keys: the Vault secret `service_role_key` may hold either
 * the legacy service-role JWT (sent as `Authorization: Bearer <jwt>`) or a
 * secret key `sb_secret_…`, which is not a JWT and is sent in the `apikey`
 * header only, as Supabase's own gateway expects.
 */

-- ============================================================================
-- HTTP from SQL: the stand-in, hardened (pg_net itself is left alone)
-- ============================================================================

do $$
begin
  if not exists (
    select from pg_catalog.pg_proc p
    join pg_catalog.pg_language l on l.oid = p.prolang
    where p.pronamespace = to_regnamespace('net') and p.proname = 'http_post' and l.lanname = 'plpython3u'
  ) then
    return; -- pg_net, or no HTTP from SQL at all
  end if;

  create or replace function net.http_post(
    url text,
    body jsonb default '{}'::jsonb,
    params jsonb default '{}'::jsonb,
    headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
    timeout_milliseconds integer default 5000
  ) returns bigint
    language plpython3u
    as $py$
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

CREDENTIAL_HEADERS = {"authorization", "apikey", "proxy-authorization", "cookie"}


class RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """pg_net does not follow redirects: the 3xx answer is the outcome."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


query = urllib.parse.urlencode(json.loads(params or "{}"))
target = url + ("&" if "?" in url else "?") + query if query else url
header_map = json.loads(headers or "{}")
stored_headers = {name: ("[redacted]" if name.lower() in CREDENTIAL_HEADERS else value)
                  for name, value in header_map.items()}
payload = (body or "{}").encode("utf-8")
request_id = plpy.execute(plpy.prepare(
    "insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds) "
    "values ('POST', $1, $2, $3, $4) returning id", ["text", "jsonb", "bytea", "integer"]),
    [target, json.dumps(stored_headers), payload, timeout_milliseconds])[0]["id"]

status = content_type = content = error = None
response_headers = {}
timed_out = False
opener = urllib.request.build_opener(RefuseRedirects)
try:
    request = urllib.request.Request(target, data=payload, method="POST", headers=header_map)
    with opener.open(request, timeout=timeout_milliseconds / 1000) as answer:
        status, content_type = answer.status, answer.headers.get("Content-Type")
        response_headers, content = dict(answer.headers), answer.read().decode("utf-8", "replace")
except urllib.error.HTTPError as failure:
    status, content_type = failure.code, failure.headers.get("Content-Type")
    response_headers, content = dict(failure.headers), failure.read().decode("utf-8", "replace")
    if 300 <= status < 400:
        error = "Redirect (%d) not followed: scheduled calls never re-send their credentials" % status
except (socket.timeout, TimeoutError):
    timed_out, error = True, "Timeout of %d ms reached" % timeout_milliseconds
except Exception as failure:
    error = "%s: %s" % (type(failure).__name__, failure)

plpy.execute(plpy.prepare(
    "insert into net._http_response (id, status_code, content_type, headers, content, timed_out, error_msg) "
    "values ($1, $2, $3, $4, $5, $6, $7)",
    ["bigint", "integer", "text", "jsonb", "text", "boolean", "text"]),
    [request_id, status, content_type, json.dumps(response_headers), (content or "")[:100000], timed_out, error])
return request_id
$py$;
  revoke all on function net.http_post(text, jsonb, jsonb, jsonb, integer) from public;

  -- Keys queued by the earlier stand-in, kept up to seven days: scrubbed now.
  update net.http_request_queue q
     set headers = (select jsonb_object_agg(h.key, case when lower(h.key) in ('authorization', 'apikey',
                                                       'proxy-authorization', 'cookie')
                                                     then '"[redacted]"'::jsonb else h.value end)
                    from jsonb_each(q.headers) h)
   where exists (select from jsonb_object_keys(q.headers) k
                 where lower(k) in ('authorization', 'apikey', 'proxy-authorization', 'cookie'));
end
$$;

-- ============================================================================
-- Functions
-- ============================================================================

/**
 * Calls one of the functions as the service, reading its base URL and the
 * service key from Vault (secrets `functions_url` and `service_role_key`).
 * A secret key (`sb_secret_…`) goes in the `apikey` header; the legacy
 * service-role JWT as `Authorization: Bearer`.
 */
create or replace function private.call_function(
  function_name text,
  body jsonb default '{}'::jsonb,
  timeout_milliseconds integer default 120000
) returns bigint
  language plpgsql
  security definer
  set search_path = ''
  as $$
declare
  base_url text := (select decrypted_secret from vault.decrypted_secrets where name = 'functions_url');
  service_key text := (select decrypted_secret from vault.decrypted_secrets where name = 'service_role_key');
  credentials jsonb;
begin
  if base_url is null or service_key is null then
    raise exception 'Vault secrets functions_url and service_role_key must be set before % can be called.',
      function_name;
  end if;
  credentials := case when service_key like 'sb\_secret\_%'
                      then jsonb_build_object('apikey', service_key)
                      else jsonb_build_object('Authorization', 'Bearer ' || service_key) end;
  return net.http_post(
    url := rtrim(base_url, '/') || '/' || function_name,
    body := body,
    headers := jsonb_build_object('Content-Type', 'application/json') || credentials,
    timeout_milliseconds := timeout_milliseconds
  );
end
$$;
