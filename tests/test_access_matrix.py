"""Who may do what: every table and view the API exposes × every kind of caller ×
select / insert / update / delete, as one table of expected outcomes, each tried for
real the way PostgREST runs a request (one transaction, ``set_config('role', …,
true)``, the JWT claims in ``request.jwt.claims``).

The world (tests/rls_fixtures.py): specialist S has past, upcoming and cancelled
sessions with client A (a note, a recording, a cancellation, status history, a
weekly recurrence A→S); specialist T has the same with client B; each specialist
has a rate, a weekly window, an exception, an active and an inactive package; the
audit log has rows. Writes aim at A's and S's rows; the admin inserts on S's (or
A's) behalf, everyone else in their own name.

Outcomes
  select:  ALL (exactly the rows the table owner sees) · OWN(labels) (exactly those
           rows) · NONE (zero rows, no error) · DENIED (no privilege: SQLSTATE 42501)
  writes:  ALLOWED (the row really changed) · NONE (0 rows affected: RLS filtered) ·
           DENIED (no privilege, 42501) · DENIED_BY_POLICY (RLS with-check, 42501) ·
           REFUSED_BY(text) (a trigger's 42501 sentence) · NOT_UPDATABLE (a view that
           cannot be written at all)

"A rule added without a matrix row fails the test": the last tests compare the
matrix with the database itself (relations, RLS switches, policies, grants).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from psycopg import sql

from tests.rls_fixtures import (  # noqa: F401  (world is a fixture)
    CALLERS, PERMISSION_DENIED, POLICY_VIOLATION, World, attempt, table_ids, world,
)


# -- outcomes -----------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    kind: str
    labels: tuple = ()
    message: str = ""

    def __repr__(self) -> str:
        if self.kind == "OWN":
            return f"OWN({','.join(self.labels)})"
        if self.kind == "REFUSED_BY":
            return "REFUSED_BY_TRIGGER"
        return self.kind


ALL = Outcome("ALL")
NONE = Outcome("NONE")
ALLOWED = Outcome("ALLOWED")
DENIED = Outcome("DENIED")
DENIED_BY_POLICY = Outcome("DENIED_BY_POLICY")
NOT_UPDATABLE = Outcome("NOT_UPDATABLE")


def OWN(*labels: str) -> Outcome:  # noqa: N802 - reads like the other constants
    return Outcome("OWN", labels)


def REFUSED_BY(message: str) -> Outcome:  # noqa: N802
    return Outcome("REFUSED_BY", message=message)


ONLY_CLIENTS_RECUR = REFUSED_BY("Only clients make recurring bookings.")  # sql/0019's trigger


NOT_THE_SPECIALIST = REFUSED_BY("can only be written by its specialist.")
NOT_A_PARTY = REFUSED_BY("Only the session's client or specialist can cancel it.")


# -- the matrix ---------------------------------------------------------------------
# One line per table and operation; the columns are the callers, in this order:
#   anon, client A, client B, specialist S (A's therapist), specialist T, admin

GRID = [
    # profiles: own row; admins all; specialists' public fields go through specialist_directory
    ("profiles", "select", DENIED, OWN("client_a"), OWN("client_b"), OWN("specialist_s"), OWN("specialist_t"), ALL),
    ("profiles", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("profiles", "update", DENIED, ALLOWED, NONE, NONE, NONE, ALLOWED),  # A's profile
    ("profiles", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    ("specialist_rates", "select", DENIED, ALL, ALL, ALL, ALL, ALL),
    ("specialist_rates", "insert", DENIED, DENIED_BY_POLICY, DENIED_BY_POLICY, ALLOWED, ALLOWED, ALLOWED),
    ("specialist_rates", "update", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),  # S's rate
    ("specialist_rates", "delete", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),

    ("availability_windows", "select", DENIED, ALL, ALL, ALL, ALL, ALL),
    ("availability_windows", "insert", DENIED, DENIED_BY_POLICY, DENIED_BY_POLICY, ALLOWED, ALLOWED, ALLOWED),
    ("availability_windows", "update", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),
    ("availability_windows", "delete", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),

    # exceptions: every signed-in user reads them, reason included (seed 002's availability check)
    ("specialist_availability_exceptions", "select", DENIED, ALL, ALL, ALL, ALL, ALL),
    ("specialist_availability_exceptions", "insert",
     DENIED, DENIED_BY_POLICY, DENIED_BY_POLICY, ALLOWED, ALLOWED, ALLOWED),
    ("specialist_availability_exceptions", "update", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),
    ("specialist_availability_exceptions", "delete", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),

    # packages: active ones to everyone (signed in or not); a specialist also their inactive ones
    ("booking_packages", "select",
     OWN("package_s_active", "package_t_active"),
     OWN("package_s_active", "package_t_active"),
     OWN("package_s_active", "package_t_active"),
     OWN("package_s_active", "package_s_inactive", "package_t_active"),
     OWN("package_t_active", "package_t_inactive", "package_s_active"),
     ALL),
    ("booking_packages", "insert", DENIED, DENIED_BY_POLICY, DENIED_BY_POLICY, ALLOWED, ALLOWED, ALLOWED),
    ("booking_packages", "update", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),
    ("booking_packages", "delete", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),

    # recurring bookings: the client manages their own, the specialist reads theirs.
    # Inserts are in the caller's own name with a specialist (S books T: a therapist may be a client too).
    ("recurring_bookings", "select",
     DENIED, OWN("recurring_as"), OWN("recurring_bt"), OWN("recurring_as"), OWN("recurring_bt"), ALL),
    # Only clients make them (sql/0019); the specialist may end one aimed at them.
    ("recurring_bookings", "insert", DENIED, ALLOWED, ALLOWED, ONLY_CLIENTS_RECUR, ONLY_CLIENTS_RECUR, ALLOWED),
    ("recurring_bookings", "update", DENIED, ALLOWED, NONE, ALLOWED, NONE, ALLOWED),  # A→S
    ("recurring_bookings", "delete", DENIED, ALLOWED, NONE, NONE, NONE, ALLOWED),

    # sessions: read by their parties and admins; written by the functions, except attendance:
    # its specialist (or an admin) records it on A's past session with S (sql/0060; only that
    # column is granted: tests/test_attendance.py)
    ("sessions", "select",
     DENIED, OWN("sessions_as"), OWN("sessions_bt"), OWN("sessions_as"), OWN("sessions_bt"), ALL),
    ("sessions", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("sessions", "update", DENIED, NONE, NONE, ALLOWED, NONE, ALLOWED),
    ("sessions", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    ("booking_status_history", "select",
     DENIED, OWN("history_as"), OWN("history_bt"), OWN("history_as"), OWN("history_bt"), ALL),
    ("booking_status_history", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("booking_status_history", "update", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("booking_status_history", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    # cancellations: the parties read; a party (or an admin) cancels in their own name; immutable
    ("booking_cancellations", "select",
     DENIED, OWN("cancellation_as"), OWN("cancellation_bt"), OWN("cancellation_as"), OWN("cancellation_bt"), ALL),
    ("booking_cancellations", "insert",  # A's upcoming session with S
     DENIED, ALLOWED, NOT_A_PARTY, ALLOWED, NOT_A_PARTY, ALLOWED),
    ("booking_cancellations", "update", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("booking_cancellations", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    # notes: the writing specialist and the session's client read; only the specialist writes
    # (for 24 hours); only admins delete
    ("session_notes", "select", DENIED, OWN("note_as"), OWN("note_bt"), OWN("note_as"), OWN("note_bt"), ALL),
    ("session_notes", "insert",  # on A's past session with S; the admin tries in S's name
     DENIED, NOT_THE_SPECIALIST, NOT_THE_SPECIALIST, ALLOWED, NOT_THE_SPECIALIST, DENIED_BY_POLICY),
    ("session_notes", "update", DENIED, NONE, NONE, ALLOWED, NONE, NONE),  # S's note on A
    ("session_notes", "delete", DENIED, NONE, NONE, NONE, NONE, ALLOWED),

    ("meeting_recordings", "select",
     DENIED, OWN("recording_as"), OWN("recording_bt"), OWN("recording_as"), OWN("recording_bt"), ALL),
    ("meeting_recordings", "insert",
     DENIED, DENIED_BY_POLICY, DENIED_BY_POLICY, DENIED_BY_POLICY, DENIED_BY_POLICY, ALLOWED),
    ("meeting_recordings", "update", DENIED, NONE, NONE, NONE, NONE, ALLOWED),
    ("meeting_recordings", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),  # expiry, not delete

    ("audit_log", "select", DENIED, NONE, NONE, NONE, NONE, ALL),
    ("audit_log", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("audit_log", "update", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("audit_log", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    # intake forms: the parties (and admins) read the status columns; nobody writes through the API
    # (the functions submit them); the ciphertext columns are not granted at all (tests/test_intake_access.py)
    ("intake_forms", "select", DENIED, OWN("intake_as"), OWN("intake_bt"), OWN("intake_as"), OWN("intake_bt"), ALL),
    ("intake_forms", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("intake_forms", "update", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("intake_forms", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    # notification_preferences: one row per user, made with the profile; each user reads and changes theirs
    ("notification_preferences", "select", DENIED, OWN("preferences_client_a"), OWN("preferences_client_b"),
     OWN("preferences_specialist_s"), OWN("preferences_specialist_t"), OWN("preferences_admin")),
    ("notification_preferences", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("notification_preferences", "update", DENIED, ALLOWED, NONE, NONE, NONE, NONE),  # A's preferences
    ("notification_preferences", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    # read models (views)
    ("specialist_directory", "select", ALL, ALL, ALL, ALL, ALL, ALL),
    ("specialist_directory", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("specialist_directory", "update", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("specialist_directory", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    ("specialist_time_off", "select", DENIED, ALL, ALL, ALL, ALL, ALL),
    ("specialist_time_off", "insert", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("specialist_time_off", "update", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),
    ("specialist_time_off", "delete", DENIED, DENIED, DENIED, DENIED, DENIED, DENIED),

    # the caller's own upcoming confirmed sessions (an admin has none of their own)
    ("upcoming_sessions", "select",
     DENIED, OWN("session_as_upcoming"), OWN("session_bt_upcoming"),
     OWN("session_as_upcoming"), OWN("session_bt_upcoming"), NONE),
    ("upcoming_sessions", "insert", *[DENIED] * 6),
    ("upcoming_sessions", "update", *[DENIED] * 6),
    ("upcoming_sessions", "delete", *[DENIED] * 6),

    # upcoming sessions outside their specialist's current hours, under the sessions' policies
    # (the world's upcoming sessions lie outside the hours: tests/rls_fixtures.py)
    ("sessions_needing_attention", "select",
     DENIED, OWN("session_as_upcoming"), OWN("session_bt_upcoming"),
     OWN("session_as_upcoming"), OWN("session_bt_upcoming"), OWN("session_as_upcoming", "session_bt_upcoming")),
    ("sessions_needing_attention", "insert", *[DENIED] * 6),
    ("sessions_needing_attention", "update", *[DENIED] * 6),
    ("sessions_needing_attention", "delete", *[DENIED] * 6),

    # every session of the caller, past and cancelled included (an admin has none of their own)
    ("session_list", "select",
     DENIED, OWN("sessions_as"), OWN("sessions_bt"), OWN("sessions_as"), OWN("sessions_bt"), NONE),
    ("session_list", "insert", *[DENIED] * 6),
    ("session_list", "update", *[DENIED] * 6),
    ("session_list", "delete", *[DENIED] * 6),
]

OPERATIONS = ("select", "insert", "update", "delete")

# The same, one row per (table, caller, operation): ("session_notes", "client_b", "select", OWN("note_bt")).
MATRIX_ROWS = [(table, caller, op, outcome)
               for table, op, *outcomes in GRID
               for caller, outcome in zip(CALLERS, outcomes, strict=True)]
MATRIX = {(table, caller, op): outcome for table, caller, op, outcome in MATRIX_ROWS}
MATRIX_TABLES = sorted({table for table, *_ in GRID})

# Views are checked through the table they show.
BASE_TABLE = {"specialist_directory": "profiles", "specialist_time_off": "specialist_availability_exceptions",
              "upcoming_sessions": "sessions", "sessions_needing_attention": "sessions", "session_list": "sessions"}


# -- what each caller tries ---------------------------------------------------------

NOW = datetime.now(timezone.utc).replace(microsecond=0)
TODAY = NOW.date()


def own_id(w: World, caller: str, admin_acts_for: str):
    """The caller's own id; the admin acts on someone else's behalf."""
    return w.people[admin_acts_for if caller == "admin" else caller].id


def insert_values(table: str, w: World, caller: str) -> dict:
    other_specialist = "specialist_t" if caller == "specialist_s" else "specialist_s"
    return {
        "profiles": lambda: {"full_name": "New Person", "timezone": "UTC"},
        "specialist_rates": lambda: {
            "specialist_id": own_id(w, caller, "specialist_s"), "amount": Decimal("80.00"), "currency": "EUR",
            "duration_minutes": 45, "effective_from": NOW + timedelta(days=400),
            "effective_to": NOW + timedelta(days=800)},
        "availability_windows": lambda: {
            "specialist_id": own_id(w, caller, "specialist_s"), "day_of_week": 3,
            "start_time": time(9), "end_time": time(12)},
        "specialist_availability_exceptions": lambda: {
            "specialist_id": own_id(w, caller, "specialist_s"), "exception_date": TODAY + timedelta(days=20),
            "reason": "training"},
        "booking_packages": lambda: {
            "specialist_id": own_id(w, caller, "specialist_s"), "name": "Ten sessions", "session_count": 10,
            "price": Decimal("800.00")},
        "recurring_bookings": lambda: {  # today's weekday at 10:00: inside the world's hours
            "user_id": own_id(w, caller, "client_a"), "specialist_id": w.people[other_specialist].id,
            "frequency": "weekly", "start_date": TODAY + timedelta(days=14), "duration_minutes": 50},
        "sessions": lambda: {
            "specialist_id": w.people["specialist_s"].id, "client_id": own_id(w, caller, "client_a"),
            "starts_at": NOW + timedelta(days=20), "ends_at": NOW + timedelta(days=20, minutes=50)},
        "booking_status_history": lambda: {"session_id": w.id("session_as_upcoming"), "to_status": "cancelled"},
        "booking_cancellations": lambda: {
            "booking_id": w.id("session_as_upcoming"), "cancelled_by": w.people[caller].id,
            "reason": "Cannot make it"},
        "session_notes": lambda: {
            "booking_id": w.id("session_as_past"), "provider_id": own_id(w, caller, "specialist_s"),
            "notes": "A new note"},
        "meeting_recordings": lambda: {
            "booking_id": w.id("session_as_past"), "storage_path": w.recording_dirs["session_as_past"] + "/new.mp4",
            "file_format": "mp4"},
        "audit_log": lambda: {"action": "forged_entry", "entity_type": "session"},
        "intake_forms": lambda: {
            "booking_id": w.id("session_as_upcoming"), "client_id": own_id(w, caller, "client_a"),
            "consent_treatment": True, "consent_confidentiality": True, "consent_data_processing": True,
            "key_version": 1, "nonce": bytes(12), "ciphertext": bytes(32)},
        "notification_preferences": lambda: {"user_id": own_id(w, caller, "client_a"), "reminders_enabled": False},
        "specialist_directory": lambda: {"full_name": "New Specialist", "timezone": "UTC"},
        "specialist_time_off": lambda: {
            "specialist_id": own_id(w, caller, "specialist_s"), "exception_date": TODAY + timedelta(days=21)},
        "upcoming_sessions": lambda: {
            "specialist_id": w.people["specialist_s"].id, "client_id": own_id(w, caller, "client_a"),
            "starts_at": NOW + timedelta(days=21), "ends_at": NOW + timedelta(days=21, minutes=50)},
        "sessions_needing_attention": lambda: {
            "specialist_id": w.people["specialist_s"].id, "client_id": own_id(w, caller, "client_a"),
            "starts_at": NOW + timedelta(days=22), "ends_at": NOW + timedelta(days=22, minutes=50)},
        "session_list": lambda: {
            "specialist_id": w.people["specialist_s"].id, "client_id": own_id(w, caller, "client_a"),
            "starts_at": NOW + timedelta(days=22), "ends_at": NOW + timedelta(days=22, minutes=50)},
    }[table]()


# table: (the row every caller tries to change or delete, a column, its new value)
WRITE_TARGETS = {
    "profiles": (lambda w: w.id("client_a"), "full_name", "Renamed"),
    "specialist_rates": (lambda w: w.id("rate_s"), "amount", Decimal("123.45")),
    "availability_windows": (lambda w: w.id("window_s"), "end_time", time(18)),
    "specialist_availability_exceptions": (lambda w: w.id("exception_s"), "reason", "training"),
    "booking_packages": (lambda w: w.id("package_s_active"), "name", "Renamed package"),
    "recurring_bookings": (lambda w: w.id("recurring_as"), "is_active", False),
    "sessions": (lambda w: w.id("session_as_past"), "attendance", "attended"),
    "booking_status_history": (lambda w: min(w.rows["history_as"]), "reason", "Changed"),
    "booking_cancellations": (lambda w: w.id("cancellation_as"), "reason", "Changed"),
    "session_notes": (lambda w: w.id("note_as"), "notes", "Rewritten"),
    "meeting_recordings": (lambda w: w.id("recording_as"), "duration_seconds", 999),
    "audit_log": (lambda w: w.id("audit_manual"), "status", "failure"),
    "intake_forms": (lambda w: w.id("intake_as"), "revision", 2),
    "notification_preferences": (lambda w: w.id("preferences_client_a"), "reminders_enabled", False),
    "specialist_directory": (lambda w: w.id("specialist_s"), "full_name", "Renamed"),
    "specialist_time_off": (lambda w: w.id("exception_s"), "is_available", True),
    "upcoming_sessions": (lambda w: w.id("session_as_upcoming"), "status", "cancelled"),
    "sessions_needing_attention": (lambda w: w.id("session_as_upcoming"), "starts_at", NOW + timedelta(days=30)),
    "session_list": (lambda w: w.id("session_as_past"), "status", "cancelled"),
}


def ident(table: str) -> sql.Identifier:
    return sql.Identifier("public", table)


# -- checking one row of the matrix -----------------------------------------------

def assert_refused(result, expected: Outcome, table: str) -> None:
    assert result.error is not None, f"expected {expected!r} on {table}, but the statement succeeded"
    if expected == NOT_UPDATABLE:
        assert result.sqlstate == "55000", f"expected 'cannot … view', got {result.sqlstate}: {result.message}"
        assert "view" in result.message
        return
    assert result.sqlstate == "42501", f"expected SQLSTATE 42501, got {result.sqlstate}: {result.message}"
    if expected == DENIED:
        assert PERMISSION_DENIED.match(result.message), f"expected a permission error, got: {result.message}"
        assert table in result.message, f"the permission error should name {table}: {result.message}"
    elif expected == DENIED_BY_POLICY:
        assert POLICY_VIOLATION.match(result.message), f"expected an RLS with-check error, got: {result.message}"
        assert f'"{table}"' in result.message
    else:
        assert expected.message in result.message, f"expected {expected.message!r}, got: {result.message}"


def check_select(db, w: World, table: str, caller: str, expected: Outcome) -> None:
    result = attempt(db, w.people[caller], sql.SQL("select id from {}").format(ident(table)))
    if expected in (DENIED, NOT_UPDATABLE) or expected.kind == "REFUSED_BY":
        assert_refused(result, expected, table)
        return
    assert result.error is None, f"{caller} should read {table}, got: {result.message}"
    seen = result.ids()
    if expected == ALL:
        everything = table_ids(db, table)
        assert everything, f"the fixture should have rows in {table}"
        assert seen == everything, f"{caller} should see every row of {table}"
    elif expected == NONE:
        assert table_ids(db, BASE_TABLE.get(table, table)), f"the fixture should have rows behind {table}"
        assert seen == set(), f"{caller} should see no row of {table}, saw {len(seen)}"
    else:
        wanted = w.ids(*expected.labels)
        assert seen == wanted, (
            f"{caller} should see exactly {expected!r} in {table}; "
            f"extra: {len(seen - wanted)}, missing: {len(wanted - seen)}")


def check_insert(db, w: World, table: str, caller: str, expected: Outcome) -> None:
    values = insert_values(table, w, caller)
    base = BASE_TABLE.get(table, table)
    before = table_ids(db, base)
    after: set = set()
    new_rows: list = []

    def look(conn):
        after.update(table_ids(conn, base))
        new_rows.extend(conn.execute(sql.SQL("select * from {} where id = any(%s)").format(ident(base)),
                                     [list(after - before)]).fetchall())

    query = sql.SQL("insert into {} ({}) values ({})").format(
        ident(table), sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)))
    result = attempt(db, w.people[caller], query, list(values.values()), then=look)
    if expected == ALLOWED:
        assert result.error is None, f"{caller} should insert into {table}, got: {result.message}"
        assert result.rowcount == 1
        assert len(new_rows) == 1, f"exactly one new row should be in {table}"
        stored = {k: new_rows[0][k] for k in values}
        assert stored == values, f"the new row should hold what {caller} sent"
    else:
        assert_refused(result, expected, table)
        assert after == before, f"a refused insert must leave {base} unchanged"


def check_update(db, w: World, table: str, caller: str, expected: Outcome) -> None:
    target_of, column, new_value = WRITE_TARGETS[table]
    target = target_of(w)
    base = BASE_TABLE.get(table, table)
    read = sql.SQL("select {} as value from {} where id = %s").format(sql.Identifier(column), ident(base))
    old_value = db.execute(read, [target]).fetchone()["value"]
    assert old_value != new_value, "the test must try a real change"
    seen_after = []
    result = attempt(db, w.people[caller],
                     sql.SQL("update {} set {} = %s where id = %s").format(ident(table), sql.Identifier(column)),
                     [new_value, target],
                     then=lambda conn: seen_after.append(conn.execute(read, [target]).fetchone()["value"]))
    if expected == ALLOWED:
        assert result.error is None, f"{caller} should update {table}, got: {result.message}"
        assert result.rowcount == 1, f"{caller}'s update of {table} should change one row"
        assert seen_after == [new_value], f"{column} should now be {new_value!r}"
    elif expected == NONE:
        assert result.error is None, f"RLS should silently filter {caller}'s update, got: {result.message}"
        assert result.rowcount == 0, f"{caller} should change no row of {table}"
        assert seen_after == [old_value]
    else:
        assert_refused(result, expected, table)
        assert seen_after == [old_value]


def check_delete(db, w: World, table: str, caller: str, expected: Outcome) -> None:
    target_of, _column, _value = WRITE_TARGETS[table]
    target = target_of(w)
    base = BASE_TABLE.get(table, table)
    exists = sql.SQL("select exists (select from {} where id = %s) as present").format(ident(base))
    still_there = []
    result = attempt(db, w.people[caller], sql.SQL("delete from {} where id = %s").format(ident(table)), [target],
                     then=lambda conn: still_there.append(conn.execute(exists, [target]).fetchone()["present"]))
    if expected == ALLOWED:
        assert result.error is None, f"{caller} should delete from {table}, got: {result.message}"
        assert result.rowcount == 1
        assert still_there == [False], "the row should be gone"
    elif expected == NONE:
        assert result.error is None, f"RLS should silently filter {caller}'s delete, got: {result.message}"
        assert result.rowcount == 0, f"{caller} should delete no row of {table}"
        assert still_there == [True]
    else:
        assert_refused(result, expected, table)
        assert still_there == [True], "a refused delete must leave the row"


CHECKS = {"select": check_select, "insert": check_insert, "update": check_update, "delete": check_delete}


@pytest.mark.parametrize(
    ("table", "caller", "operation", "expected"),
    MATRIX_ROWS,
    ids=[f"{t}-{c}-{o}-{e!r}" for t, c, o, e in MATRIX_ROWS],
)
def test_access_matrix(db, world, table, caller, operation, expected):
    CHECKS[operation](db, world, table, caller, expected)


# -- the matrix covers the database ---------------------------------------------------

API_ROLES = {"anon": ("anon",), "authenticated": tuple(c for c in CALLERS if c != "anon")}
API_RELATION_KINDS = ("r", "p", "v", "m", "f")


def api_relations(conn) -> dict[str, str]:
    """Every table and view in the exposed schema, name -> relkind."""
    return {r["relname"]: r["relkind"] for r in conn.execute(
        "select c.relname, c.relkind::text from pg_class c where c.relnamespace = 'public'::regnamespace"
        " and c.relkind = any(%s)", [list(API_RELATION_KINDS)])}


def matrix_gaps_for_policies(conn, matrix: dict) -> list[tuple]:
    """(table, caller, operation) triples a policy governs but the matrix does not list."""
    gaps = []
    for p in conn.execute("select tablename, policyname, cmd, roles::text[] as roles from pg_policies"
                          " where schemaname = 'public'"):
        operations = OPERATIONS if p["cmd"] == "ALL" else (p["cmd"].lower(),)
        callers = CALLERS if "public" in p["roles"] else tuple(
            c for role in p["roles"] for c in API_ROLES.get(role, ()))
        gaps += [(p["tablename"], c, op) for op in operations for c in callers
                 if (p["tablename"], c, op) not in matrix]
    return gaps


def grant_disagreements(conn, matrix: dict) -> list[str]:
    """Grants to anon/authenticated that the matrix contradicts: a privilege held where
    the matrix says DENIED, or none held where it promises anything else."""
    problems = []
    for table, kind in api_relations(conn).items():
        for role, callers in API_ROLES.items():
            for op in OPERATIONS:
                privilege = op.upper()
                held = conn.execute(
                    "select has_table_privilege(%(role)s, %(rel)s, %(priv)s)"
                    " or (%(priv)s <> 'DELETE' and has_any_column_privilege(%(role)s, %(rel)s, %(priv)s)) as held",
                    {"role": role, "rel": f"public.{table}", "priv": privilege}).fetchone()["held"]
                for caller in callers:
                    outcome = matrix.get((table, caller, op))
                    if outcome is None:
                        problems.append(f"{table}/{caller}/{op}: no matrix row")
                    elif held and outcome in (DENIED, NOT_UPDATABLE):
                        problems.append(f"{table}/{caller}/{op}: {role} holds {privilege} but the matrix says {outcome!r}")
                    elif not held and outcome not in (DENIED, NOT_UPDATABLE):
                        problems.append(f"{table}/{caller}/{op}: {role} lacks {privilege} but the matrix says {outcome!r}")
    return problems


def test_every_table_in_public_has_row_level_security(db):
    without = [r["relname"] for r in db.execute(
        "select relname from pg_class where relnamespace = 'public'::regnamespace"
        " and relkind in ('r', 'p') and not relrowsecurity")]
    assert without == [], f"RLS must be enabled on every table in public: {without}"


def test_matrix_lists_exactly_the_tables_and_views_in_public(db):
    in_database = set(api_relations(db))
    assert in_database - set(MATRIX_TABLES) == set(), "every table and view in public needs matrix rows"
    assert set(MATRIX_TABLES) - in_database == set(), "the matrix lists relations that do not exist"


def test_every_policy_has_its_matrix_rows(db):
    assert matrix_gaps_for_policies(db, MATRIX) == []


def test_grants_to_api_roles_agree_with_the_matrix(db):
    assert grant_disagreements(db, MATRIX) == []


def test_policies_are_per_operation_and_for_api_roles_only(db):
    loose = [(r["tablename"], r["policyname"], r["cmd"], r["roles"]) for r in db.execute(
        "select tablename, policyname, cmd, roles::text[] as roles from pg_policies where schemaname = 'public'")
        if r["cmd"] == "ALL" or not set(r["roles"]) <= {"anon", "authenticated"}]
    assert loose == [], "every policy should be `for <one operation> to anon|authenticated`"


def test_nothing_outside_public_is_reachable_by_api_roles(db):
    reachable = [r["name"] for r in db.execute(
        """
        select n.nspname || '.' || c.relname as name
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'v', 'm', 'f')
          and n.nspname not in ('public', 'pg_catalog', 'information_schema')
          -- an extension's own tables (pg_cron's cron.job, with its own RLS) are the extension's business
          and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                           and d.objid = c.oid and d.deptype = 'e')
          and exists (select from unnest(array['anon', 'authenticated']) as role, unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE']) as priv
                      where has_table_privilege(role, c.oid, priv)
                         or (priv <> 'DELETE' and has_any_column_privilege(role, c.oid, priv)))
        """)]
    assert reachable == [], f"tables outside public are not in the matrix and must stay closed: {reachable}"


# The RPC functions the API offers on purpose, each with the tests that hold it to what it may reveal.
PUBLIC_RPCS = {
    "available_slots": "free start and end times only (tests/test_booking_rules.py, test_available_slots_property.py)",
    "session_analytics": "a specialist's own rows, an admin's all, others none (tests/test_session_analytics.py)",
}


def test_no_function_in_public_is_callable_through_the_api_but_the_listed_rpcs(db):
    callable_ = [r["proname"] for r in db.execute(
        "select proname from pg_proc where pronamespace = 'public'::regnamespace"
        " and (has_function_privilege('anon', oid, 'execute') or has_function_privilege('authenticated', oid, 'execute'))"
        " order by proname")]
    assert callable_ == sorted(PUBLIC_RPCS), f"RPC functions in public are outside the access matrix: {callable_}"


def test_the_guards_notice_a_new_table_policy_or_grant(db):
    """The completeness checks above can fail: a table added with a policy and a grant
    but no matrix rows is reported by each of them."""
    db.execute("create table public.access_probe (id uuid primary key)")
    db.execute("alter table public.access_probe enable row level security")
    db.execute('create policy "Signed-in users can read probes" on public.access_probe'
               " for select to authenticated using (true)")
    db.execute("grant select on public.access_probe to authenticated")
    db.execute("create table public.access_probe_open (id uuid primary key)")

    assert "access_probe" in set(api_relations(db)) - set(MATRIX_TABLES)
    assert ("access_probe", "client_a", "select") in matrix_gaps_for_policies(db, MATRIX)
    assert "access_probe/client_a/select: no matrix row" in grant_disagreements(db, MATRIX)
    no_rls = [r["relname"] for r in db.execute(
        "select relname from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'"
        " and not relrowsecurity")]
    assert no_rls == ["access_probe_open"]

    widened = dict(MATRIX)
    widened[("sessions", "client_a", "delete")] = NONE  # the matrix claims a privilege that is not granted
    assert any(p.startswith("sessions/client_a/delete: authenticated lacks DELETE")
               for p in grant_disagreements(db, widened))
