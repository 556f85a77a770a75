"""Races with real concurrent connections: twenty callers start the same write at
the same moment (a barrier releases them together) and the database lets exactly
one through, refusing the others with a clean error rather than a deadlock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable

import psycopg
import pytest

from tests.support import create_person

RACERS = 20
# Each race runs a few times: a race that goes wrong only now and then must still show.
ROUNDS = 5
# A deadlock is a failure here; finding it in 0.1 s instead of 1 s keeps a failing run short.
# These races test the constraints themselves, so the booking rules are off for the
# racers (as for an operator's import); tests/test_booking_rules.py races with them on.
RACER_OPTIONS = "-c deadlock_timeout=100ms -c lock_timeout=20s -c app.booking_rules=off"


def race(url: str, work: Callable[[psycopg.Connection, int], None]) -> list[BaseException | None]:
    """Runs ``work(conn, i)`` on RACERS autocommit connections released together;
    returns each racer's error, or None for the ones that succeeded."""
    barrier = threading.Barrier(RACERS, timeout=30)

    def racer(i: int):
        with psycopg.connect(url, autocommit=True, options=RACER_OPTIONS) as conn:
            barrier.wait()
            try:
                work(conn, i)
            except psycopg.Error as exc:
                return exc
            return None

    with ThreadPoolExecutor(max_workers=RACERS) as pool:
        return list(pool.map(racer, range(RACERS), timeout=60))


def describe(outcomes) -> list[str]:
    """Each racer's outcome as "ok" or "SQLSTATE: message", sorted."""
    return sorted("ok" if e is None else f"{e.diag.sqlstate}: {e.diag.message_primary}" for e in outcomes)


def slot(round_number: int) -> tuple[datetime, datetime]:
    starts_at = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=3 + round_number)
    return starts_at, starts_at + timedelta(minutes=50)


@pytest.mark.parametrize("round_number", range(ROUNDS), ids=lambda n: f"round-{n + 1}")
def test_twenty_simultaneous_bookings_of_one_specialist_store_exactly_one(
        committed_db, database_url, round_number):
    specialist = create_person(committed_db, "specialist")
    clients = [create_person(committed_db, "client") for _ in range(RACERS)]
    starts_at, ends_at = slot(round_number)

    outcomes = race(database_url, lambda conn, i: conn.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) values (%s, %s, %s, %s)",
        [specialist.id, clients[i].id, starts_at, ends_at]))

    stored = committed_db.execute("select count(*) as n from public.sessions where specialist_id = %s",
                                  [specialist.id]).fetchone()["n"]
    assert stored == 1, "one specialist, one slot: exactly one session is stored"
    assert describe(outcomes) == ["23P01: conflicting key value violates exclusion constraint "
                                  '"sessions_no_specialist_overlap"'] * (RACERS - 1) + ["ok"], \
        "every other caller is refused by the no-overlap constraint (not by a deadlock)"


@pytest.mark.parametrize("round_number", range(ROUNDS), ids=lambda n: f"round-{n + 1}")
def test_twenty_simultaneous_bookings_of_one_client_store_exactly_one(committed_db, database_url, round_number):
    client = create_person(committed_db, "client")
    specialists = [create_person(committed_db, "specialist") for _ in range(RACERS)]
    starts_at, ends_at = slot(round_number)

    outcomes = race(database_url, lambda conn, i: conn.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) values (%s, %s, %s, %s)",
        [specialists[i].id, client.id, starts_at, ends_at]))

    stored = committed_db.execute("select count(*) as n from public.sessions where client_id = %s",
                                  [client.id]).fetchone()["n"]
    assert stored == 1, "one client, one slot: exactly one session is stored"
    assert describe(outcomes) == ["23P01: conflicting key value violates exclusion constraint "
                                  '"sessions_no_client_overlap"'] * (RACERS - 1) + ["ok"], \
        "every other caller is refused by the no-overlap constraint (not by a deadlock)"


def test_twenty_simultaneous_cancellations_of_one_session_cancel_it_once(committed_db, database_url):
    specialist = create_person(committed_db, "specialist")
    client = create_person(committed_db, "client")
    starts_at, ends_at = slot(0)
    session_id = committed_db.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) "
        "values (%s, %s, %s, %s) returning id", [specialist.id, client.id, starts_at, ends_at]).fetchone()["id"]

    outcomes = race(database_url, lambda conn, i: conn.execute(
        "insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, %s)",
        [session_id, client.id if i % 2 else specialist.id, f"attempt {i}"]))

    assert describe(outcomes) == [f"TB002: Session {session_id} is already cancelled."] * (RACERS - 1) \
        + ["ok"], "one cancellation succeeds; every other one finds the session already cancelled"
    cancellations = committed_db.execute("select count(*) as n from public.booking_cancellations "
                                         "where booking_id = %s", [session_id]).fetchone()["n"]
    assert cancellations == 1, "exactly one cancellation row"
    changes = committed_db.execute(
        "select from_status, to_status from public.booking_status_history where session_id = %s "
        "and to_status = 'cancelled'", [session_id]).fetchall()
    assert changes == [{"from_status": "confirmed", "to_status": "cancelled"}], "exactly one history row"
    audits = committed_db.execute("select count(*) as n from public.audit_log where entity_id = %s "
                                  "and action = 'session_cancelled'", [session_id]).fetchone()["n"]
    assert audits == 1, "exactly one audit entry"
