"""The access tests' world and the tools to try things in it.

``world`` is one small practice, written as the superuser: specialist S has
sessions with client A (past, upcoming and cancelled, with a note, a recording, a
cancellation, status history and a weekly recurrence), and the same again for
specialist T with client B, so that "only my rows" can be told apart from "every
row". Each row gets a label ("note_as", "package_t_inactive", ...) that the access
matrix uses instead of ids.

``attempt`` runs one statement as a caller, the way PostgREST runs a request
(``tests.support.acting_as``), and reports what happened: the rows, the number of
rows changed, or the error.
"""

from __future__ import annotations

import dataclasses
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.storage_fixtures import recording_path
from tests.support import Person, acting_as

CALLERS = ("anon", "client_a", "client_b", "specialist_s", "specialist_t", "admin")


@dataclass
class World:
    people: dict[str, Person]
    # label -> the ids of the rows it names (one id for most labels; history and audit hold several)
    rows: dict[str, set] = field(default_factory=dict)
    # session label -> where that session's recordings sit in Storage (sessions/<yyyy-mm>/<session id>)
    recording_dirs: dict[str, str] = field(default_factory=dict)

    def id(self, label: str):
        (only,) = self.rows[label]
        return only

    def ids(self, *labels: str) -> set:
        out: set = set()
        for label in labels:
            out |= self.rows[label]
        return out

    def label(self, label: str, *ids) -> None:
        self.rows[label] = set(ids)


def insert_row(conn: psycopg.Connection, table: str, **values) -> dict:
    """Insert one row as the connection's current user and return it."""
    query = sql.SQL("insert into {} ({}) values ({}) returning *").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    return conn.execute(query, list(values.values())).fetchone()


@pytest.fixture
def world(db, anon, client_a, client_b, specialist_s, specialist_t, admin, make_session) -> World:
    people = {"anon": anon, "client_a": client_a, "client_b": client_b,
              "specialist_s": specialist_s, "specialist_t": specialist_t, "admin": admin}
    w = World(people)
    for name, person in people.items():
        if name != "anon":
            w.label(name, person.id)

    now = datetime.now(timezone.utc)
    today = now.date()
    pairs = {"as": (specialist_s, client_a), "bt": (specialist_t, client_b)}
    for key, (specialist, client) in pairs.items():
        spec_key = key[1]  # "s" or "t"
        w.label(f"rate_{spec_key}", insert_row(
            db, "specialist_rates", specialist_id=specialist.id, amount=90, currency="EUR", duration_minutes=50,
            effective_from=now - timedelta(days=30), effective_to=now + timedelta(days=365))["id"])
        # Hours on today's weekday only: the weekly recurrences below (from a week today, 10:00)
        # fit them, and the upcoming sessions (two days ahead) lie outside them, so they show in
        # sessions_needing_attention.
        w.label(f"window_{spec_key}", insert_row(
            db, "availability_windows", specialist_id=specialist.id, day_of_week=(today.weekday() + 1) % 7,
            start_time=time(9), end_time=time(17))["id"])
        w.label(f"exception_{spec_key}", insert_row(
            db, "specialist_availability_exceptions", specialist_id=specialist.id,
            exception_date=today + timedelta(days=10), reason="sick_leave")["id"])
        for active in (True, False):
            w.label(f"package_{spec_key}_{'active' if active else 'inactive'}", insert_row(
                db, "booking_packages", specialist_id=specialist.id, name=f"Package of {spec_key}",
                session_count=5, price=400, is_active=active)["id"])
        w.label(f"recurring_{key}", insert_row(
            db, "recurring_bookings", user_id=client.id, specialist_id=specialist.id, frequency="weekly",
            start_date=today + timedelta(days=7))["id"])

        offset = timedelta(hours=1) if key == "bt" else timedelta(0)
        past = make_session(specialist, client, starts_in=timedelta(days=-3) + offset)
        upcoming = make_session(specialist, client, starts_in=timedelta(days=2) + offset)
        cancelled = make_session(specialist, client, starts_in=timedelta(days=5) + offset)
        w.label(f"session_{key}_past", past["id"])
        w.label(f"session_{key}_upcoming", upcoming["id"])
        w.label(f"session_{key}_cancelled", cancelled["id"])
        canceller = client if key == "as" else specialist
        w.label(f"cancellation_{key}", insert_row(
            db, "booking_cancellations", booking_id=cancelled["id"], cancelled_by=canceller.id,
            reason="Away that week")["id"])
        w.label(f"note_{key}", insert_row(
            db, "session_notes", booking_id=past["id"], provider_id=specialist.id, notes="Clinical note")["id"])
        w.recording_dirs[f"session_{key}_past"] = recording_path(past, "").rstrip("/")
        w.label(f"recording_{key}", insert_row(
            db, "meeting_recordings", booking_id=past["id"], storage_path=recording_path(past, f"{key}.mp4"),
            file_format="mp4", duration_seconds=3000)["id"])
        w.label(f"intake_{key}", insert_row(
            db, "intake_forms", booking_id=upcoming["id"], client_id=client.id, consent_treatment=True,
            consent_confidentiality=True, consent_data_processing=True, key_version=1, nonce=bytes(12),
            ciphertext=bytes(range(48)))["id"])
        session_ids = [past["id"], upcoming["id"], cancelled["id"]]
        w.label(f"sessions_{key}", *session_ids)
        w.label(f"history_{key}", *(r["id"] for r in db.execute(
            "select id from public.booking_status_history where session_id = any(%s)", [session_ids])))

    for name, person in people.items():
        if name != "anon":
            w.label(f"preferences_{name}", db.execute(
                "select id from public.notification_preferences where user_id = %s", [person.id]).fetchone()["id"])
    w.label("audit_manual", insert_row(
        db, "audit_log", action="recurring_dispatch", entity_type="recurring_booking",
        entity_id=w.id("recurring_as"), new_values=json.dumps({"created": 1}))["id"])
    w.label("audit_all", *(r["id"] for r in db.execute("select id from public.audit_log")))
    assert len(w.rows["history_as"]) == 4, "three sessions created and one cancelled: four status changes"
    return w


# -- trying things as someone ------------------------------------------------------

@dataclass
class Attempt:
    """What one statement did: the rows it returned and how many it changed, or its error."""
    rows: list[dict] = field(default_factory=list)
    rowcount: int = 0
    error: psycopg.Error | None = None

    @property
    def sqlstate(self) -> str | None:
        return self.error.sqlstate if self.error else None

    @property
    def message(self) -> str:
        return self.error.diag.message_primary if self.error else ""

    def ids(self) -> set:
        return {row["id"] for row in self.rows}


def attempt(conn: psycopg.Connection, person: Person, query, params=(), *, then=None) -> Attempt:
    """Runs ``query`` as ``person`` in a PostgREST-style request (which is undone
    afterwards). ``then(conn)``, if given, runs afterwards in the same request as the
    superuser (to look at what the statement did before it is rolled back)."""
    result = Attempt()
    with acting_as(conn, person):
        try:
            with conn.transaction():
                cur = conn.execute(query, params)
                result.rowcount = cur.rowcount
                result.rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            result.error = exc
        if then is not None:
            conn.execute("reset role")
            then(conn)
    return result


@contextmanager
def as_service_role(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The service key's identity (Supabase's service_role JWT has no `sub`), undone afterwards."""
    with conn.transaction(force_rollback=True):
        claims = {"iss": "supabase", "ref": "test", "role": "service_role", "iat": 0, "exp": 2**31}
        conn.execute("select set_config('role', 'service_role', true), set_config('request.jwt.claims', %s, true)",
                     [json.dumps(claims)])
        yield conn


def with_claims(person: Person, **extra) -> Person:
    """The same person with extra (unverifiable by the database) JWT claims."""
    return dataclasses.replace(person, claims_extra={**person.claims_extra, **extra})


PERMISSION_DENIED = re.compile(r"^permission denied for (table|view|function|schema) ")
POLICY_VIOLATION = re.compile(r"^new row violates row-level security policy for table ")


def table_ids(conn: psycopg.Connection, table: str) -> set:
    """Every id in a public table or view, as the superuser sees it."""
    return {r["id"] for r in conn.execute(sql.SQL("select id from {}").format(sql.Identifier("public", table)))}


def database_text_containing(conn: psycopg.Connection, needle: str) -> list[str]:
    """Where ``needle`` appears in the database, as the superuser sees it: any row of
    any table outside the system schemas (the whole row as text), any stored setting,
    any function body, any comment. An empty list means nowhere."""
    found = []
    tables = conn.execute(
        """
        select n.nspname as schema, c.relname as name
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'm')
          and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
          and n.nspname not like 'pg_temp%'
        """
    ).fetchall()
    pattern = f"%{needle}%"
    for t in tables:
        hit = conn.execute(
            sql.SQL("select exists (select from {} as t where t::text like %s) as hit").format(
                sql.Identifier(t["schema"], t["name"])),
            [pattern],
        ).fetchone()["hit"]
        if hit:
            found.append(f"table {t['schema']}.{t['name']}")
    catalog_checks = {
        "a database or role setting": "select exists (select from pg_db_role_setting where setconfig::text like %s)",
        "a server setting": "select exists (select from pg_settings where setting like %s)",
        "a function body": "select exists (select from pg_proc where prosrc like %s)",
        "a comment": "select exists (select from pg_description where description like %s)",
    }
    for where, query in catalog_checks.items():
        if conn.execute(query, [pattern]).fetchone()["exists"]:
            found.append(where)
    return found

