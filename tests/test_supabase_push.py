"""Pushing sql/ and policies/ to a hosted Supabase project, rehearsed.

A database is set up the way Supabase sets up a project's, from Supabase's own
definitions (supabase/postgres: migrations/db/init-scripts and migrations; the
auth schema as Supabase Auth leaves it):

- the bootstrap superuser is `supabase_admin`; `postgres` is the project's
  owner-like role, demoted (NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION
  BYPASSRLS), and it is `postgres` that runs the migration, as
  `therapy-db migrate --database-url …` or `supabase db push` do;
- roles anon, authenticated, service_role (API roles, INHERIT since 2023,
  statement timeouts), authenticator (login, NOINHERIT, granted all three and
  supabase_admin), supabase_auth_admin;
- Supabase's default privileges: ALL on tables, sequences and functions that
  postgres or supabase_admin create in public, to anon, authenticated and
  service_role;
- schema extensions (uuid-ossp, pgcrypto), schema auth owned by
  supabase_auth_admin with auth.users (Supabase Auth's columns) and
  auth.uid(), auth.role(), auth.email(), auth.jwt() with Supabase's exact
  bodies; pg_net's `net` interface and Vault's `vault` interface (both enabled
  on a project), and pg_cron when this machine has it, created by the admin as
  the dashboard does (only the `postgres` database can hold it).

Then the project's migrations are applied with `therapy-db migrate`, and the
tests show that nothing of Supabase's was replaced (role attributes and
memberships, function definitions, table columns, owners and ACLs, default
privileges, compared before and after), and that despite Supabase's broad
default grants, anon and authenticated hold exactly the privileges they hold
in the plain-PostgreSQL test database, where nothing but policies/ grants them
anything.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.ops.cli import main as therapy_db
from shared.ops.localpg import LocalCluster

SUPABASE_ROLES = ("supabase_admin", "postgres", "anon", "authenticated", "service_role", "authenticator",
                  "supabase_auth_admin")
SUPABASE_SCHEMAS = ("auth", "extensions", "net", "vault", "public")
API_ROLES = ("anon", "authenticated")

# Supabase's setup, as supabase_admin. Quoted statements follow supabase/postgres's
# init scripts and migrations; the auth functions are Supabase Auth's current bodies.
SUPABASE_SETUP = r"""
-- Roles (init-scripts/00000000000000-initial-schema.sql, migrations/10000000000000_demote-postgres.sql,
-- 20230529180330_alter_api_roles_for_inherit.sql)
create role postgres login;
alter role postgres nosuperuser createdb createrole login replication bypassrls;
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create user authenticator noinherit;
grant anon to authenticator;
grant authenticated to authenticator;
grant service_role to authenticator;
grant supabase_admin to authenticator;
alter role authenticated inherit;
alter role anon inherit;
alter role service_role inherit;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter user supabase_admin set search_path to public, extensions;

grant all on database postgres to postgres;
grant usage on schema public to postgres, anon, authenticated, service_role;
grant all on schema public to postgres;

-- What the initial schema, run as postgres, left: defaults for postgres's objects in public.
alter default privileges for role postgres in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for user supabase_admin in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for user supabase_admin in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for user supabase_admin in schema public
  grant all on functions to postgres, anon, authenticated, service_role;

-- Extensions
create schema if not exists extensions;
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
grant all on schema extensions to postgres;

-- Auth (init-scripts/00000000000001-auth-schema.sql, then Supabase Auth's migrations)
create user supabase_auth_admin noinherit createrole login noreplication;
create schema if not exists auth authorization supabase_admin;
create table auth.users (
    instance_id uuid,
    id uuid not null primary key,
    aud character varying(255),
    role character varying(255),
    email character varying(255),
    encrypted_password character varying(255),
    email_confirmed_at timestamp with time zone,
    invited_at timestamp with time zone,
    confirmation_token character varying(255),
    confirmation_sent_at timestamp with time zone,
    recovery_token character varying(255),
    recovery_sent_at timestamp with time zone,
    email_change_token_new character varying(255),
    email_change character varying(255),
    email_change_sent_at timestamp with time zone,
    last_sign_in_at timestamp with time zone,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    created_at timestamp with time zone,
    updated_at timestamp with time zone,
    phone text default null::character varying,
    phone_confirmed_at timestamp with time zone,
    phone_change text default ''::character varying,
    phone_change_token character varying(255) default ''::character varying,
    phone_change_sent_at timestamp with time zone,
    confirmed_at timestamp with time zone generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
    email_change_token_current character varying(255) default ''::character varying,
    email_change_confirm_status smallint default 0
      constraint users_email_change_confirm_status_check
      check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
    banned_until timestamp with time zone,
    reauthentication_token character varying(255) default ''::character varying,
    reauthentication_sent_at timestamp with time zone,
    is_sso_user boolean default false not null,
    deleted_at timestamp with time zone,
    is_anonymous boolean default false not null
);
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';

create function auth.uid() returns uuid
    language sql stable
    as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
comment on function auth.uid() is 'Deprecated. Use auth.jwt() -> ''sub'' instead.';

create function auth.role() returns text
    language sql stable
    as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
comment on function auth.role() is 'Deprecated. Use auth.jwt() -> ''role'' instead.';

create function auth.email() returns text
    language sql stable
    as $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;
comment on function auth.email() is 'Deprecated. Use auth.jwt() -> ''email'' instead.';

create function auth.jwt() returns jsonb
    language sql stable
    as $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

grant usage on schema auth to anon, authenticated, service_role;
grant all privileges on schema auth to supabase_auth_admin;
grant all privileges on all tables in schema auth to supabase_auth_admin;
alter user supabase_auth_admin set search_path = "auth";
alter table auth.users owner to supabase_auth_admin;
alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.email() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;
grant all on schema auth to postgres;
grant all on all tables in schema auth to postgres;
grant all on all routines in schema auth to postgres;

-- pg_net's interface (the extension is enabled on the project): what the project calls.
create schema net;
grant usage on schema net to postgres, anon, authenticated, service_role;
create table net.http_request_queue (
    id bigserial not null, method text not null, url text not null, headers jsonb not null, body bytea,
    timeout_milliseconds integer not null
);
create table net._http_response (
    id bigint, status_code integer, content_type text, headers jsonb, content text, timed_out boolean,
    error_msg text, created timestamptz not null default now()
);
create function net.http_post(url text, body jsonb default '{}'::jsonb, params jsonb default '{}'::jsonb,
                              headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
                              timeout_milliseconds integer default 5000) returns bigint
    language sql as $$ select 1::bigint $$;
grant select on net._http_response, net.http_request_queue to postgres;
grant execute on function net.http_post(text, jsonb, jsonb, jsonb, integer) to postgres;

-- Vault's interface (supabase_vault is enabled on every project).
create schema vault;
create table vault.secrets (
    id uuid primary key default gen_random_uuid(), name text unique, description text not null default '',
    secret text not null, key_id uuid, nonce bytea, created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create view vault.decrypted_secrets as
    select id, name, description, secret, secret as decrypted_secret, key_id, nonce, created_at, updated_at
    from vault.secrets;
create function vault.create_secret(new_secret text, new_name text default null, new_description text default '',
                                    new_key_id uuid default null) returns uuid
    language sql security definer set search_path = ''
    as $$ insert into vault.secrets (secret, name, description) values (new_secret, new_name, new_description)
          returning id $$;
grant usage on schema vault to postgres with grant option;
grant select on vault.decrypted_secrets to postgres with grant option;
grant execute on function vault.create_secret(text, text, text, uuid) to postgres;
"""

# pg_cron, enabled from the dashboard (the admin creates it; postgres may schedule jobs).
PG_CRON_SETUP = """
create extension if not exists pg_cron;
grant usage on schema cron to postgres with grant option;
grant all privileges on all tables in schema cron to postgres with grant option;
grant execute on all functions in schema cron to postgres;
"""


class SupabaseLikeCluster(LocalCluster):
    """A cluster whose bootstrap superuser is supabase_admin, as on Supabase."""

    @property
    def superuser(self) -> str:
        return "supabase_admin"


@pytest.fixture(scope="module")
def supabase_cluster() -> Iterator[SupabaseLikeCluster]:
    cluster = SupabaseLikeCluster(Path(tempfile.mkdtemp(prefix="therapy-supabase-pg-")), fast=True)
    cluster.init()
    cluster.start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(SUPABASE_SETUP)
            if cluster.has_pg_cron:
                admin.execute(PG_CRON_SETUP)
        yield cluster
    finally:
        cluster.destroy()


# -- snapshots of what Supabase owns --------------------------------------------------------------

SNAPSHOT_QUERIES = {
    "roles": """
        select rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
               rolbypassrls, coalesce(rolconfig, '{}') as rolconfig
        from pg_roles where rolname = any(%(roles)s) order by rolname""",
    "memberships": """
        select r.rolname as role, m.rolname as member, am.admin_option
        from pg_auth_members am join pg_roles r on r.oid = am.roleid join pg_roles m on m.oid = am.member
        where r.rolname = any(%(roles)s) or m.rolname = any(%(roles)s) order by 1, 2""",
    "schemas": """
        select nspname, pg_get_userbyid(nspowner) as owner, nspacl::text[] as acl
        from pg_namespace where nspname = any(%(schemas)s) order by 1""",
    "functions": """
        select p.oid::regprocedure::text as function, pg_get_functiondef(p.oid) as definition,
               pg_get_userbyid(p.proowner) as owner, p.proacl::text[] as acl,
               obj_description(p.oid, 'pg_proc') as comment,
               (select e.extname from pg_depend d join pg_extension e on e.oid = d.refobjid
                where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e') as extension
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any(%(supabase_only)s) order by 1""",
    "relations": """
        select c.oid::regclass::text as relation, c.relkind, pg_get_userbyid(c.relowner) as owner,
               c.relacl::text[] as acl, c.relrowsecurity, obj_description(c.oid, 'pg_class') as comment
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%(supabase_only)s) and c.relkind in ('r', 'v', 'm', 'S', 'p') order by 1""",
    "columns": """
        select a.attrelid::regclass::text as relation, a.attnum, a.attname,
               format_type(a.atttypid, a.atttypmod) as type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) as default_or_generated, a.attacl::text[] as acl
        from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where n.nspname = any(%(supabase_only)s) and a.attnum > 0 and not a.attisdropped order by 1, 2""",
    "constraints": """
        select conrelid::regclass::text as relation, conname, pg_get_constraintdef(oid) as definition
        from pg_constraint where connamespace::regnamespace::text = any(%(supabase_only)s) order by 1, 2""",
    "extensions": "select extname, extversion, extnamespace::regnamespace::text as schema from pg_extension order by 1",
    "default_privileges": """
        select pg_get_userbyid(defaclrole) as role, defaclnamespace::regnamespace::text as schema, defaclobjtype,
               defaclacl::text[] as acl
        from pg_default_acl order by 1, 2, 3""",
}


def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    parameters = {"roles": list(SUPABASE_ROLES), "schemas": list(SUPABASE_SCHEMAS),
                  "supabase_only": [schema for schema in SUPABASE_SCHEMAS if schema != "public"]}
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {name: conn.execute(query, parameters).fetchall() for name, query in SNAPSHOT_QUERIES.items()}


@dataclass
class Push:
    before: dict[str, list[dict[str, Any]]]
    after: dict[str, list[dict[str, Any]]]
    url: str
    output: str


@pytest.fixture(scope="module")
def pushed(supabase_cluster: SupabaseLikeCluster) -> Push:
    """The project's migrations applied by `therapy-db migrate`, as postgres, to the Supabase-like database."""
    url = supabase_cluster.url("postgres", user="postgres")
    before = snapshot(supabase_cluster.url())
    capture = _Capture()
    with capture:
        status = therapy_db(["--database-url", url, "migrate"])
    assert status == 0, capture.text
    return Push(before, snapshot(supabase_cluster.url()), supabase_cluster.url(), capture.text)


class _Capture:
    """stdout and stderr of the command, for the assertion message."""

    def __enter__(self):
        self._buffer = io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self._buffer))
        self._stack.enter_context(contextlib.redirect_stderr(self._buffer))
        return self

    def __exit__(self, *exc):
        self._stack.close()

    @property
    def text(self) -> str:
        return self._buffer.getvalue()


# -- nothing of Supabase's is replaced ------------------------------------------------------------------

def test_migrate_as_postgres_applies_every_file(pushed: Push):
    assert "migration(s) applied; the database is up to date." in pushed.output
    with psycopg.connect(pushed.url) as conn:
        applied = conn.execute("select count(*) from private.schema_migrations").fetchone()[0]
    expected = len(list(Path(__file__).resolve().parents[1].glob("sql/*.sql"))) + len(
        list(Path(__file__).resolve().parents[1].glob("policies/*.sql")))
    assert applied == expected


@pytest.mark.parametrize("what", ["roles", "memberships", "schemas", "constraints"])
def test_supabase_objects_are_unchanged(pushed: Push, what: str):
    assert pushed.after[what] == pushed.before[what]


def test_supabase_functions_keep_their_definitions_owners_and_grants(pushed: Push):
    before = {row["function"]: row for row in pushed.before["functions"]}
    after = {row["function"]: row for row in pushed.after["functions"]}
    assert {name: after.get(name) for name in before} == before
    # The one addition: btree_gist, which sql/0002 creates in Supabase's extensions schema.
    assert {row["extension"] for name, row in after.items() if name not in before} == {"btree_gist"}


def test_supabase_tables_keep_their_columns_owners_and_grants(pushed: Push):
    assert pushed.after["columns"] == pushed.before["columns"]
    # The project adds nothing to Supabase's schemas either: same relations, same owners, same ACLs.
    assert pushed.after["relations"] == pushed.before["relations"]


def test_supabase_extensions_are_kept_at_their_versions(pushed: Push):
    before = {row["extname"]: row for row in pushed.before["extensions"]}
    after = {row["extname"]: row for row in pushed.after["extensions"]}
    assert {name: after.get(name) for name in before} == before
    assert set(after) - set(before) == {"btree_gist"}


def test_default_privileges_change_only_by_the_documented_revoke_of_execute_in_public(pushed: Push):
    """sql/0002 revokes, for objects postgres creates in public, the execute on functions that
    Supabase's defaults give anon and authenticated: functions are granted one by one instead."""
    def keyed(rows):
        return {(row["role"], row["schema"], row["defaclobjtype"]): set(row["acl"]) for row in rows}

    before, after = keyed(pushed.before["default_privileges"]), keyed(pushed.after["default_privileges"])
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed <= {("postgres", "public", "f"), ("postgres", "-", "f")}
    function_defaults = before[("postgres", "public", "f")]
    removed = function_defaults - after.get(("postgres", "public", "f"), set())
    assert {entry.split("=")[0] for entry in removed} == set(API_ROLES)


def test_auth_helpers_still_read_the_claims_the_way_supabase_does(pushed: Push):
    claims = {"sub": "5f0c2f0e-7d8a-4c3b-9e1f-2a3b4c5d6e7f", "role": "authenticated", "email": "a@example.test"}
    with psycopg.connect(pushed.url) as conn:
        conn.execute("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                     [json.dumps(claims)])
        row = conn.execute("select auth.uid()::text, auth.role(), auth.email(), auth.jwt() ->> 'sub'").fetchone()
    assert row == (claims["sub"], "authenticated", claims["email"], claims["sub"])


# -- anon and authenticated hold exactly what policies/ grants -----------------------------------------

PRIVILEGES = """
select kind, object, grantee, privilege from (
  select 'relation' as kind, c.oid::regclass::text as object, acl.grantee, acl.privilege_type as privilege
  from pg_class c join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) acl
  where n.nspname in ('public', 'private') and c.relkind in ('r', 'v', 'm', 'S', 'p', 'f')
  union all
  select 'column', a.attrelid::regclass::text || '.' || a.attname, acl.grantee, acl.privilege_type
  from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace,
       aclexplode(a.attacl) acl
  where n.nspname in ('public', 'private') and a.attnum > 0 and not a.attisdropped
  union all
  select 'function', p.oid::regprocedure::text, acl.grantee, acl.privilege_type
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace,
       aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) acl
  where n.nspname in ('public', 'private')
  union all
  select 'schema', n.nspname, acl.grantee, acl.privilege_type
  from pg_namespace n, aclexplode(n.nspacl) acl where n.nspname = 'private'
) granted
where grantee in (select oid from pg_roles where rolname = any(%(roles)s)) or grantee = 0
"""


def api_privileges(url: str) -> set[tuple[str, str, str, str]]:
    """Every privilege anon and authenticated (or PUBLIC) hold on what the migrations create: the
    relations, columns and functions of public and private, and schema private (schema public
    itself is Supabase's, with Supabase's grants)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(PRIVILEGES, {"roles": list(API_ROLES)}).fetchall()
        names = dict(conn.execute("select oid, rolname from pg_roles").fetchall()) | {0: "PUBLIC"}
    return {(kind, obj, names[grantee], privilege) for kind, obj, grantee, privilege in rows}


def test_api_roles_hold_exactly_the_privileges_policies_grant_on_plain_postgres(pushed: Push, database_url: str):
    on_supabase, on_plain = api_privileges(pushed.url), api_privileges(database_url)
    assert on_supabase - on_plain == set(), "granted on Supabase beyond what policies/ grants"
    assert on_plain - on_supabase == set(), "granted on plain PostgreSQL but missing on Supabase"


@pytest.mark.parametrize("role, table, privilege", [
    ("anon", "public.sessions", "select"),
    ("anon", "public.sessions", "insert"),
    ("anon", "public.session_notes", "select"),
    ("anon", "public.audit_log", "select"),
    ("authenticated", "public.sessions", "insert"),
    ("authenticated", "public.sessions", "update"),
    ("authenticated", "public.sessions", "delete"),
    ("authenticated", "public.booking_cancellations", "update"),
    ("authenticated", "public.audit_log", "delete"),
    ("authenticated", "public.booking_status_history", "truncate"),
])
def test_supabase_default_grants_do_not_reach_the_project_tables(pushed: Push, role: str, table: str,
                                                                 privilege: str):
    with psycopg.connect(pushed.url) as conn:
        assert conn.execute("select has_table_privilege(%s, %s, %s)", [role, table, privilege]).fetchone() == (False,)


def test_anon_cannot_read_sessions_through_the_api(pushed: Push):
    with psycopg.connect(pushed.url) as conn:
        conn.execute("select set_config('role', 'anon', true), set_config('request.jwt.claims', %s, true)",
                     [json.dumps({"role": "anon", "iss": "supabase"})])
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table sessions"):
            conn.execute("select * from public.sessions")


def test_scheduled_calls_use_supabase_vault_and_pg_net_not_stand_ins(pushed: Push):
    with psycopg.connect(pushed.url) as conn:
        owners = dict(conn.execute(
            """select p.oid::regprocedure::text, pg_get_userbyid(p.proowner) from pg_proc p
               where p.oid in ('net.http_post(text,jsonb,jsonb,jsonb,integer)'::regprocedure,
                               'vault.create_secret(text,text,text,uuid)'::regprocedure)""").fetchall())
        languages = conn.execute("select count(*) from pg_language where lanname = 'plpython3u'").fetchone()[0]
    assert set(owners.values()) == {"supabase_admin"}
    assert languages == 0


def test_cron_jobs_are_scheduled_when_pg_cron_is_enabled(pushed: Push, supabase_cluster: SupabaseLikeCluster):
    if not supabase_cluster.has_pg_cron:
        pytest.skip("pg_cron is not installed on this machine (Debian: postgresql-15-cron)")
    with psycopg.connect(pushed.url) as conn:
        jobs = dict(conn.execute("select jobname, schedule from cron.job").fetchall())
        owners = {row[0] for row in conn.execute("select username from cron.job")}
    assert jobs == {"dispatch-recurring": "0 2 * * *", "calendar-sync": "* * * * *",
                    "cleanup-job-history": "17 3 * * *", "notifications": "* * * * *",
                    "recording-expiry": "41 3 * * *"}
    assert owners == {"postgres"}


def test_migrating_again_changes_nothing(pushed: Push, supabase_cluster: SupabaseLikeCluster):
    capture = _Capture()
    with capture:
        assert therapy_db(["--database-url", supabase_cluster.url("postgres", user="postgres"), "migrate"]) == 0
    assert "0 migration(s) applied" in capture.text
    assert snapshot(supabase_cluster.url()) == pushed.after
