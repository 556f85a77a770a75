"""Helpers the tests share: people in the database, and calling as them the way
PostgREST does (one transaction; ``set_config('role', …, true)``; the verified JWT
claims as JSON in ``request.jwt.claims``).
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True)
class Person:
    id: uuid.UUID
    role: str  # client, specialist, admin; "anon" for the signed-out caller
    email: str = ""
    claims_extra: dict = field(default_factory=dict)

    @property
    def claims(self) -> dict:
        if self.role == "anon":
            return {"role": "anon", "iss": "supabase-test"}
        now = int(time.time())
        return {
            "sub": str(self.id),
            "role": "authenticated",
            "aud": "authenticated",
            "email": self.email,
            "iat": now,
            "exp": now + 3600,
            "app_metadata": {"provider": "email"},
            "user_metadata": {},
            **self.claims_extra,
        }

    @property
    def db_role(self) -> str:
        return "anon" if self.role == "anon" else "authenticated"


ANON = Person(uuid.UUID(int=0), "anon")


def create_person(conn: psycopg.Connection, role: str = "client", *, full_name: str | None = None,
                  timezone: str = "UTC", email: str | None = None) -> Person:
    """A row in auth.users (its profile comes from the trigger), then the role set."""
    user_id = uuid.uuid4()
    email = email or f"{role}-{user_id.hex[:8]}@example.test"
    conn.execute(
        "insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s)",
        [user_id, email, json.dumps({"full_name": full_name or f"{role.title()} {user_id.hex[:6]}"})],
    )
    conn.execute("update public.profiles set role = %s, timezone = %s where id = %s", [role, timezone, user_id])
    return Person(user_id, role, email)


@contextmanager
def acting_as(conn: psycopg.Connection, person: Person) -> Iterator[psycopg.Connection]:
    """Within the caller's open transaction, switch identity as PostgREST would,
    inside a savepoint so a refused statement does not end the test's transaction.
    The identity is dropped again on exit (the savepoint is rolled back)."""
    with conn.transaction(force_rollback=True):
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            [person.db_role, json.dumps(person.claims)],
        )
        yield conn


@contextmanager
def request_as(url: str, person: Person, read_only: bool = False) -> Iterator[psycopg.Connection]:
    """A whole PostgREST-style request on its own connection, committed at the end."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        with conn.transaction():
            if read_only:
                conn.execute("set transaction read only")
            conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                [person.db_role, json.dumps(person.claims)],
            )
            yield conn


MISSING = object()  # in body_with: leave the field out


def body_with(valid: dict, **changes: object) -> dict:
    """A request body: `valid` with some fields changed, or left out (MISSING)."""
    body = dict(valid)
    for name, value in changes.items():
        if value is MISSING:
            body.pop(name)
        else:
            body[name] = value
    return body
