"""The Supabase compatibility layer (sql/0001_supabase_compat.sql): the API roles,
the claim readers with Supabase's own semantics, and the promise that applying the
file to a real Supabase project changes none of Supabase's objects."""

from __future__ import annotations

import json
import subprocess
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.ops.migrate import REPO_ROOT, find_psql
from tests.data_layer import scratch_database

USER_ID = uuid.UUID("6f1c2a4e-8d0b-4c57-9a11-3e2f5b7c9d01")
OTHER_ID = uuid.UUID("0b9e7d3c-1a2f-4e5d-8c6b-7a9f0e1d2c3b")


# -- roles -----------------------------------------------------------------------

@pytest.mark.parametrize("role, can_login, bypasses_rls", [
    ("anon", False, False),
    ("authenticated", False, False),
    ("service_role", False, True),
    ("authenticator", True, False),
])
def test_supabase_roles_exist_with_supabases_attributes(db, role, can_login, bypasses_rls):
    found = db.execute("select rolcanlogin, rolbypassrls, rolsuper, rolcreaterole, rolcreatedb "
                       "from pg_roles where rolname = %s", [role]).fetchone()

    assert found is not None, f"role {role} exists"
    assert (found["rolcanlogin"], found["rolbypassrls"]) == (can_login, bypasses_rls)
    assert not (found["rolsuper"] or found["rolcreaterole"] or found["rolcreatedb"]), f"{role} has no admin powers"


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_authenticator_logs_in_and_switches_to_each_api_role(pg_cluster, role):
    with psycopg.connect(pg_cluster.url(user="authenticator")) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "authenticator"
        # PostgREST's way: set_config('role', …, true) inside the request's transaction.
        conn.execute("select set_config('role', %s, true)", [role])
        assert conn.execute("select current_user").fetchone()[0] == role


def test_authenticator_cannot_switch_to_the_superuser(pg_cluster):
    with psycopg.connect(pg_cluster.url(user="authenticator")) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            conn.execute("set role postgres")

    assert caught.value.diag.message_primary == 'permission denied to set role "postgres"'


# -- claim readers ------------------------------------------------------------------

USER_CLAIMS = {"sub": str(USER_ID), "role": "authenticated", "aud": "authenticated", "email": "a@example.test"}
SERVICE_CLAIMS = {"iss": "supabase", "ref": "project", "role": "service_role", "iat": 1, "exp": 2}

CLAIM_CASES = [
    pytest.param({"request.jwt.claims": json.dumps(USER_CLAIMS)},
                 (USER_ID, "authenticated", USER_CLAIMS), id="user-claims"),
    pytest.param({"request.jwt.claims": json.dumps(SERVICE_CLAIMS)},
                 (None, "service_role", SERVICE_CLAIMS), id="service-key-has-no-sub"),
    pytest.param({"request.jwt.claim.sub": str(USER_ID), "request.jwt.claim.role": "authenticated"},
                 (USER_ID, "authenticated", None), id="legacy-claim-settings"),
    pytest.param({"request.jwt.claim.sub": str(OTHER_ID), "request.jwt.claims": json.dumps(USER_CLAIMS)},
                 (OTHER_ID, "authenticated", USER_CLAIMS), id="legacy-sub-wins-as-in-supabase"),
    pytest.param({"request.jwt.claims": ""}, (None, None, None), id="empty-claims"),
    pytest.param({}, (None, None, None), id="nothing-set"),
]


@pytest.mark.parametrize("settings, expected", CLAIM_CASES)
def test_auth_functions_read_the_jwt_claims_as_supabase_does(db, settings, expected):
    with db.transaction(force_rollback=True):
        for name, value in settings.items():
            db.execute("select set_config(%s, %s, true)", [name, value])
        row = db.execute("select auth.uid() as uid, auth.role() as role, auth.jwt() as jwt").fetchone()

    assert (row["uid"], row["role"], row["jwt"]) == expected


def test_the_claims_are_gone_after_the_request_transaction(database_url):
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        with conn.transaction():
            conn.execute("select set_config('request.jwt.claims', %s, true), "
                         "set_config('request.jwt.claim.sub', %s, true)", [json.dumps(USER_CLAIMS), str(USER_ID)])
            assert conn.execute("select auth.uid() as uid").fetchone()["uid"] == USER_ID

        after = conn.execute(
            "select current_setting('request.jwt.claims', true) as claims, "
            "current_setting('request.jwt.claim.sub', true) as sub, "
            "auth.uid() as uid, auth.role() as role, auth.jwt() as jwt").fetchone()

    assert after == {"claims": "", "sub": "", "uid": None, "role": None, "jwt": None}, \
        "settings read as '' after the transaction and the readers answer NULL"


# -- applied over a real Supabase project -----------------------------------------------

SUPABASE_STAND_IN = """
create schema auth;
-- Supabase's auth.users has many more columns than ours; one is enough to notice.
create table auth.users (
  instance_id uuid,
  id uuid primary key,
  email varchar(255),
  raw_user_meta_data jsonb,
  banned_until timestamptz
);
revoke all on table auth.users from public;
grant select on table auth.users to service_role;
create function auth.uid() returns uuid language sql stable
  as $$ select '00000000-0000-0000-0000-00000000abcd'::uuid $$;
create function auth.role() returns text language sql stable as $$ select 'stand-in role'::text $$;
create function auth.jwt() returns jsonb language sql stable as $$ select '{"stand_in": true}'::jsonb $$;
create function auth.email() returns text language sql stable as $$ select 'stand-in@example.test'::text $$;
revoke execute on function auth.uid(), auth.role(), auth.jwt(), auth.email() from public;
grant execute on function auth.uid() to authenticated;
"""

SNAPSHOT = {
    "schema": "select nspowner::regrole::text as owner, nspacl::text as acl from pg_namespace where nspname = 'auth'",
    "users_columns": "select string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' order by attnum) "
                     "as columns from pg_attribute where attrelid = 'auth.users'::regclass and attnum > 0 "
                     "and not attisdropped",
    "users_table": "select relowner::regrole::text as owner, relacl::text as acl, "
                   "(select count(*) from pg_trigger where tgrelid = c.oid) as triggers "
                   "from pg_class c where oid = 'auth.users'::regclass",
    "functions": "select p.proname, pg_get_functiondef(p.oid) as definition, p.proacl::text as acl, "
                 "p.proowner::regrole::text as owner from pg_proc p "
                 "where p.pronamespace = 'auth'::regnamespace order by p.proname",
    "roles": "select rolname, rolcanlogin, rolbypassrls, rolinherit from pg_roles "
             "where rolname in ('anon', 'authenticated', 'service_role', 'authenticator') order by rolname",
}


def snapshot(url: str) -> dict:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT.items()}


def test_applying_the_layer_over_supabase_changes_none_of_supabases_objects(pg_cluster):
    with scratch_database(pg_cluster) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SUPABASE_STAND_IN)
        before = snapshot(url)

        applied = subprocess.run(
            [find_psql(), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(REPO_ROOT / "sql/0001_supabase_compat.sql"), url],
            capture_output=True, text=True)

        assert applied.returncode == 0, f"the file applies cleanly over Supabase's objects: {applied.stderr}"
        after = snapshot(url)
        with psycopg.connect(url) as conn:
            uid = conn.execute("select auth.uid()").fetchone()[0]

    for name in SNAPSHOT:
        assert after[name] == before[name], f"{name} must be left exactly as Supabase made it"
    assert uid == uuid.UUID("00000000-0000-0000-0000-00000000abcd"), "Supabase's auth.uid() still answers"
