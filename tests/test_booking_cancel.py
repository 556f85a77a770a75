"""booking-cancel through its HTTP interface: functions-framework's app and the served
process (most tests run once through each), with the real Google client talking to
the local Calendar API server.

A signed-in client or specialist of a session (or an admin) cancels it; everyone else
hears NOT_FOUND, exactly as for a session that does not exist. One transaction records
the status, the cancellation, the history and the audit; the calendar event follows.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.calendar_server import FakeCalendarServer
from tests.functions_fixtures import (
    REPO_ROOT,
    Answer,
    BookableSpecialist,
    FunctionClient,
    FunctionsEnv,
    ServedClient,
    bearer,
    service_token,
)
from tests.support import MISSING, Person, body_with, create_person, request_as

SUCCESS = {"success": True, "message": "Booking cancelled successfully. No refund will be processed."}
REASON = "Personal emergency"
CALENDAR_ID = "rosa.lind@clinic.test"


# -- helpers --------------------------------------------------------------------------

@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/London")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", calendar_id=CALENDAR_ID)


@pytest.fixture
def session(booked_session, specialist: BookableSpecialist, client: Person) -> dict:
    """A confirmed session of the client with the specialist, three days ahead, with its event."""
    return booked_session(specialist, client)


def cancel(api: FunctionClient, caller: Person, booking_id: uuid.UUID | str, reason: Any = REASON,
           **token_options: Any) -> Answer:
    return api.post_json({"booking_id": str(booking_id), "reason": reason}, headers=bearer(caller, **token_options))


def footprint(conn: psycopg.Connection, server: FakeCalendarServer) -> dict[str, int]:
    """Everything a cancellation can change: rows written, and requests the Calendar API received."""
    counts = conn.execute(
        """select (select count(*) from public.sessions where status = 'confirmed') as confirmed,
                  (select count(*) from public.booking_cancellations) as cancellations,
                  (select count(*) from public.booking_status_history) as history,
                  (select count(*) from public.audit_log) as audit_log,
                  (select count(*) from private.calendar_deletions) as calendar_deletions"""
    ).fetchone()
    return {**counts, "calendar_requests": len(server.requests)}


def assert_error(answer: Answer, status: int, code: str) -> dict:
    body = answer.json()
    assert (answer.status, body.get("success"), body.get("error")) == (status, False, code), body
    assert {"success", "error", "message"} <= set(body) <= {"success", "error", "message", "details"}, body
    assert body["message"], body
    return body


def assert_cancelled(conn: psycopg.Connection, server: FakeCalendarServer, session: dict, by: Person,
                     actor_role: str, reason: str = REASON) -> None:
    """The session is cancelled, with one row of each record, and its event deleted once."""
    row = conn.execute("select * from public.sessions where id = %s", [session["id"]]).fetchone()
    assert (row["status"], row["cancelled_by"], row["cancellation_reason"]) == ("cancelled", by.id, reason)
    cancellations = conn.execute(
        "select booking_id, cancelled_by, reason, cancellation_policy_applied from public.booking_cancellations"
    ).fetchall()
    assert cancellations == [{"booking_id": session["id"], "cancelled_by": by.id, "reason": reason,
                              "cancellation_policy_applied": "no_refund"}]
    history = conn.execute(
        """select from_status, to_status, changed_by, reason from public.booking_status_history
           where session_id = %s order by changed_at, from_status nulls first""", [session["id"]]).fetchall()
    assert history[1:] == [{"from_status": "confirmed", "to_status": "cancelled", "changed_by": by.id,
                            "reason": reason}]
    audit = conn.execute(
        """select action, actor_id, actor_role, status, new_values ->> 'channel' as channel,
                  old_values ->> 'status' as old_status, new_values ->> 'status' as new_status
           from public.audit_log where entity_id = %s""", [session["id"]]).fetchall()
    assert audit == [{"action": "session_cancelled", "actor_id": by.id, "actor_role": actor_role,
                      "status": "success", "channel": "booking-cancel", "old_status": "confirmed",
                      "new_status": "cancelled"}]
    deletes = server.api_calls("DELETE")
    assert [(call.path, call.status) for call in deletes] == [
        (f"/calendar/v3/calendars/{CALENDAR_ID.replace('@', '%40')}/events/{session['id'].hex}", 204)]
    assert server.events(CALENDAR_ID) == {}
    queued = conn.execute("select completed_at, last_error from private.calendar_deletions").fetchall()
    assert len(queued) == 1 and queued[0]["completed_at"] is not None and queued[0]["last_error"] is None


# -- who may cancel ------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["client", "specialist", "admin"])
def test_the_sessions_client_specialist_or_an_admin_cancels_it(
        who: str, booking_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, specialist: BookableSpecialist, session: dict) -> None:
    caller = {"client": client, "specialist": specialist.person,
              "admin": create_person(committed_db, "admin", full_name="Ada Admin")}[who]

    answer = cancel(booking_cancel_api, caller, session["id"])

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert_cancelled(committed_db, functions_env.server, session, by=caller, actor_role=who)


def test_therapist_cancels_a_session_and_it_leaves_their_upcoming_list(
        booking_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, booked_session) -> None:
    """Seed 000: a therapist selects a confirmed session and confirms; the session is cancelled
    (still listed in the sessions, as cancelled), its event is gone, and the dashboard's
    upcoming list no longer shows it."""
    cancelled = booked_session(specialist, client, starts_in=timedelta(days=2))
    kept = booked_session(specialist, client, starts_in=timedelta(days=4))

    def upcoming() -> list[tuple[uuid.UUID, str]]:
        with request_as(functions_env.database_url, specialist.person, read_only=True) as conn:
            return [(r["id"], r["status"]) for r in conn.execute("select id, status from public.upcoming_sessions")]

    def session_list() -> dict[uuid.UUID, str]:
        with request_as(functions_env.database_url, specialist.person, read_only=True) as conn:
            return {r["id"]: r["status"] for r in conn.execute("select id, status from public.sessions")}

    assert upcoming() == [(cancelled["id"], "confirmed"), (kept["id"], "confirmed")]

    answer = cancel(booking_cancel_api, specialist.person, cancelled["id"], reason="Therapist unwell")

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert upcoming() == [(kept["id"], "confirmed")]
    assert session_list() == {cancelled["id"]: "cancelled", kept["id"]: "confirmed"}
    assert list(functions_env.server.events(CALENDAR_ID)) == [kept["id"].hex]


def _someone_else(committed_db: psycopg.Connection, bookable_specialist, kind: str) -> Person:
    if kind == "another client":
        return create_person(committed_db, "client")
    return bookable_specialist(full_name="Dr Other").person


@pytest.mark.parametrize("kind", ["another client", "another specialist"])
def test_someone_elses_session_is_not_found_exactly_like_a_missing_one(
        kind: str, booking_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, session: dict, bookable_specialist) -> None:
    stranger = _someone_else(committed_db, bookable_specialist, kind)
    missing_id = uuid.uuid4()
    before = footprint(committed_db, functions_env.server)

    theirs = cancel(booking_cancel_api, stranger, session["id"])
    missing = cancel(booking_cancel_api, stranger, missing_id)

    theirs_body, missing_body = assert_error(theirs, 404, "NOT_FOUND"), assert_error(missing, 404, "NOT_FOUND")
    # The same answer, but for the id that was asked about.
    assert json.loads(theirs.text.replace(str(session["id"]), "<id>")) == \
        json.loads(missing.text.replace(str(missing_id), "<id>"))
    assert set(theirs_body) == set(missing_body) == {"success", "error", "message"}
    assert theirs.header("Content-Type") == missing.header("Content-Type")
    assert footprint(committed_db, functions_env.server) == before


def test_an_anonymous_sign_in_is_forbidden(booking_cancel_api: FunctionClient, functions_env: FunctionsEnv,
                                           committed_db: psycopg.Connection, client: Person,
                                           session: dict) -> None:
    """Supabase's anonymous users hold real tokens (role authenticated, is_anonymous true)."""
    before = footprint(committed_db, functions_env.server)

    answer = cancel(booking_cancel_api, client, session["id"], is_anonymous=True)

    assert_error(answer, 403, "FORBIDDEN")
    assert footprint(committed_db, functions_env.server) == before


UNAUTHORIZED_HEADERS: dict[str, Callable[[Person], dict[str, str]]] = {
    "no Authorization header": lambda client: {},
    "Basic scheme": lambda client: {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    "not a JWT": lambda client: {"Authorization": "Bearer not-a-jwt"},
    "signed with another secret": lambda client: bearer(client, secret="x" * 64),
    "expired": lambda client: bearer(client, expires_in=-3600),
    "the anon key": lambda client: {"Authorization": f"Bearer {service_token(role='anon')}"},
    "the service key": lambda client: {"Authorization": f"Bearer {service_token()}"},
    "user without a profile": lambda client: bearer(uuid.uuid4()),
}


@pytest.mark.parametrize("case", list(UNAUTHORIZED_HEADERS))
def test_a_caller_without_a_valid_user_token_is_unauthorized(
        case: str, booking_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    before = footprint(committed_db, functions_env.server)

    answer = booking_cancel_api.post_json({"booking_id": str(session["id"]), "reason": REASON},
                                          headers=UNAUTHORIZED_HEADERS[case](client))

    assert_error(answer, 401, "UNAUTHORIZED")
    assert footprint(committed_db, functions_env.server) == before


# -- the session's state -----------------------------------------------------------------------

@pytest.mark.parametrize("who", ["client", "specialist"])
def test_an_already_cancelled_session_is_refused_and_nothing_is_recorded_twice(
        who: str, booking_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, specialist: BookableSpecialist, session: dict) -> None:
    first = cancel(booking_cancel_api, client, session["id"])
    assert first.status == 200, first.text
    before = footprint(committed_db, functions_env.server)

    again = cancel(booking_cancel_api, client if who == "client" else specialist.person, session["id"],
                   reason="Once more")

    assert_error(again, 409, "ALREADY_CANCELLED")
    assert footprint(committed_db, functions_env.server) == before
    assert committed_db.execute("select reason from public.booking_cancellations").fetchone()["reason"] == REASON


@pytest.mark.parametrize(("starts_in", "minutes"), [
    pytest.param(timedelta(days=-1), 50, id="ended yesterday"),
    pytest.param(timedelta(minutes=-10), 50, id="in progress"),
    pytest.param(timedelta(seconds=-1), 50, id="started a second ago"),
])
@pytest.mark.parametrize("who", ["client", "specialist"])
def test_a_session_that_has_started_cannot_be_cancelled(
        who: str, starts_in: timedelta, minutes: int, booking_cancel_api: FunctionClient,
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, booked_session) -> None:
    past = booked_session(specialist, client, starts_in=starts_in, minutes=minutes)
    before = footprint(committed_db, functions_env.server)

    answer = cancel(booking_cancel_api, client if who == "client" else specialist.person, past["id"])

    assert_error(answer, 409, "BOOKING_IN_PAST")
    assert footprint(committed_db, functions_env.server) == before
    assert functions_env.server.events(CALENDAR_ID) != {}


# -- minimum notice (CANCELLATION_MIN_NOTICE_HOURS) --------------------------------------------

@pytest.mark.parametrize("transport", ["app", "served"])
@pytest.mark.parametrize(("who", "starts_in", "expected"), [
    pytest.param("client", timedelta(hours=23, minutes=50), "CANCELLATION_TOO_LATE", id="client inside the notice"),
    pytest.param("client", timedelta(hours=24, minutes=10), None, id="client just outside the notice"),
    pytest.param("specialist", timedelta(hours=1), None, id="specialist inside the notice (exempt)"),
])
def test_with_a_minimum_notice_clients_cannot_cancel_inside_it(
        transport: str, who: str, starts_in: timedelta, expected: str | None, configured_functions_api,
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, booked_session) -> None:
    api = configured_functions_api(transport, CANCELLATION_MIN_NOTICE_HOURS="24").booking_cancel
    soon = booked_session(specialist, client, starts_in=starts_in)
    before = footprint(committed_db, functions_env.server)

    answer = cancel(api, client if who == "client" else specialist.person, soon["id"])

    if expected is None:
        assert (answer.status, answer.json()) == (200, SUCCESS)
    else:
        assert_error(answer, 409, expected)
        assert "24 hours" in answer.json()["message"]
        assert footprint(committed_db, functions_env.server) == before


def test_without_a_minimum_notice_a_client_cancels_an_hour_ahead(
        booking_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, booked_session) -> None:
    soon = booked_session(specialist, client, starts_in=timedelta(hours=1))

    answer = cancel(booking_cancel_api, client, soon["id"])

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert_cancelled(committed_db, functions_env.server, soon, by=client, actor_role="client")


# -- the reason ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "stored"), [
    pytest.param("  Flu \n", "Flu", id="trimmed"),
    pytest.param("é" * 1000, "é" * 1000, id="1,000 characters"),
    pytest.param("  " + "x" * 1000 + "  ", "x" * 1000, id="1,000 characters once trimmed"),
])
def test_the_reason_is_stored_trimmed(sent: str, stored: str, booking_cancel_api: FunctionClient,
                                      committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    answer = cancel(booking_cancel_api, client, session["id"], reason=sent)

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert committed_db.execute("select reason from public.booking_cancellations").fetchone()["reason"] == stored
    history = committed_db.execute(
        "select reason from public.booking_status_history where to_status = 'cancelled'").fetchone()
    assert history["reason"] == stored


# -- bad input ---------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
VALID = {"booking_id": "{session}", "reason": REASON}


def _with(**changes: Any) -> dict:
    return body_with(VALID, **changes)


# case: (method, body: a dict to fill in and send as JSON, or raw bytes; headers; status; code)
BAD_REQUESTS: dict[str, tuple[str, Any, dict[str, str], int, str]] = {
    "booking_id missing": ("POST", _with(booking_id=MISSING), JSON, 400, "INVALID_REQUEST"),
    "reason missing": ("POST", _with(reason=MISSING), JSON, 400, "INVALID_REQUEST"),
    "empty object": ("POST", {}, JSON, 400, "INVALID_REQUEST"),
    "an extra field": ("POST", _with(refund=True), JSON, 400, "INVALID_REQUEST"),
    "a cancelled_by field": ("POST", _with(cancelled_by=str(uuid.uuid4())), JSON, 400, "INVALID_REQUEST"),
    "booking_id null": ("POST", _with(booking_id=None), JSON, 400, "INVALID_REQUEST"),
    "booking_id a number": ("POST", _with(booking_id=42), JSON, 400, "INVALID_REQUEST"),
    "booking_id a list": ("POST", _with(booking_id=["{session}"]), JSON, 400, "INVALID_REQUEST"),
    "booking_id an object": ("POST", _with(booking_id={"id": "{session}"}), JSON, 400, "INVALID_REQUEST"),
    "booking_id not a UUID": ("POST", _with(booking_id="BK-2026-000001"), JSON, 400, "INVALID_REQUEST"),
    "booking_id a truncated UUID": ("POST", _with(booking_id="{session_truncated}"), JSON, 400, "INVALID_REQUEST"),
    "booking_id empty": ("POST", _with(booking_id=""), JSON, 400, "INVALID_REQUEST"),
    "reason null": ("POST", _with(reason=None), JSON, 400, "INVALID_REQUEST"),
    "reason a number": ("POST", _with(reason=7), JSON, 400, "INVALID_REQUEST"),
    "reason true": ("POST", _with(reason=True), JSON, 400, "INVALID_REQUEST"),
    "reason a list": ("POST", _with(reason=["sick"]), JSON, 400, "INVALID_REQUEST"),
    "reason empty": ("POST", _with(reason=""), JSON, 400, "INVALID_REQUEST"),
    "reason whitespace": ("POST", _with(reason=" \t\n "), JSON, 400, "INVALID_REQUEST"),
    "reason 1,001 characters": ("POST", _with(reason="x" * 1001), JSON, 400, "INVALID_REQUEST"),
    "reason with a NUL character": ("POST", _with(reason="sick\u0000"), JSON, 400, "INVALID_REQUEST"),
    "a JSON array": ("POST", b'["{session}", "sick"]', JSON, 400, "INVALID_REQUEST"),
    "JSON null": ("POST", b"null", JSON, 400, "INVALID_REQUEST"),
    "malformed JSON": ("POST", b'{"booking_id": ', JSON, 400, "INVALID_REQUEST"),
    "not UTF-8": ("POST", b'{"booking_id": "\xff", "reason": "x"}', JSON, 400, "INVALID_REQUEST"),
    "empty body": ("POST", b"", JSON, 400, "INVALID_REQUEST"),
    "text/plain": ("POST", VALID, {"Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    "a form": ("POST", b"booking_id=x&reason=y", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
               "UNSUPPORTED_MEDIA_TYPE"),
    "no content type": ("POST", VALID, {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    "a 1 MB body": ("POST", b'{"booking_id": "{session}", "reason": "' + b"x" * 1_000_000 + b'"}', JSON, 413,
                    "PAYLOAD_TOO_LARGE"),
    "GET": ("GET", None, {}, 405, "METHOD_NOT_ALLOWED"),
    "PUT": ("PUT", VALID, JSON, 405, "METHOD_NOT_ALLOWED"),
    "DELETE": ("DELETE", VALID, JSON, 405, "METHOD_NOT_ALLOWED"),
}


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, bytes):
        return value.replace(b"{session}", names["session"].encode())
    return value


def _raw(body: Any, session_id: uuid.UUID) -> bytes | None:
    payload = _fill(body, {"session": str(session_id), "session_truncated": str(session_id)[:-1]})
    return json.dumps(payload).encode() if isinstance(payload, dict) else payload


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_its_error_and_changes_nothing(
        case: str, booking_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    method, body, headers, status, code = BAD_REQUESTS[case]
    before = footprint(committed_db, functions_env.server)

    answer = booking_cancel_api.request(method, body=_raw(body, session["id"]), headers={**headers, **bearer(client)})

    assert_error(answer, status, code)
    if status == 405:
        assert answer.header("Allow") == "POST"
    assert footprint(committed_db, functions_env.server) == before
    assert functions_env.server.requests == []


def test_the_valid_request_of_the_bad_input_table_cancels(
        booking_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, session: dict) -> None:
    """The table's baseline: only the named change makes each case fail."""
    answer = booking_cancel_api.request("POST", body=_raw(VALID, session["id"]), headers={**JSON, **bearer(client)})

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert_cancelled(committed_db, functions_env.server, session, by=client, actor_role="client")


# -- concurrency (the served process) ------------------------------------------------------------

def test_twenty_concurrent_cancels_by_client_and_specialist_cancel_once(
        served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, session: dict) -> None:
    api = ServedClient(served_functions.base_url, "booking-cancel")
    callers = [client, specialist.person] * 10
    barrier = threading.Barrier(len(callers))
    answers: list[Any] = [None] * len(callers)

    def run(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = cancel(api, callers[index], session["id"], reason=f"Reason {index}")
        except Exception as exc:  # kept, so that the test reports it
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(callers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert all(isinstance(a, Answer) for a in answers), answers
    outcomes = sorted((a.status, a.json().get("error")) for a in answers)
    assert outcomes == [(200, None)] + [(409, "ALREADY_CANCELLED")] * 19
    (winner,) = [i for i, a in enumerate(answers) if a.status == 200]
    cancellations = committed_db.execute("select booking_id, cancelled_by, reason from public.booking_cancellations"
                                         ).fetchall()
    assert cancellations == [{"booking_id": session["id"], "cancelled_by": callers[winner].id,
                              "reason": f"Reason {winner}"}]
    history = committed_db.execute(
        "select from_status, to_status from public.booking_status_history where to_status = 'cancelled'").fetchall()
    assert history == [{"from_status": "confirmed", "to_status": "cancelled"}]
    assert committed_db.execute(
        "select count(*) as n from public.audit_log where action = 'session_cancelled'").fetchone()["n"] == 1
    assert len(functions_env.server.api_calls("DELETE")) == 1
    assert functions_env.server.events(CALENDAR_ID) == {}


# -- the benchmark ---------------------------------------------------------------------------------

def test_the_cancel_benchmark_runs_in_its_small_mode() -> None:
    """`python -m tests.bench.booking_cancel --small` end to end: its own cluster, calendar and server."""
    run = subprocess.run([sys.executable, "-m", "tests.bench.booking_cancel", "--small"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)

    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^seeded 4 specialists, \d+ clients, 64 confirmed sessions with their events$",
                     run.stdout, re.M), run.stdout
    assert re.search(r"^cancellations: 60 succeeded, 0 failed$", run.stdout, re.M), run.stdout
    # 60 measured and one warm-up cancellation per caller.
    assert re.search(r"^checked: 64 cancelled sessions, 64 cancellation rows, 64 calendar deletions done, "
                     r"0 events left$", run.stdout, re.M), run.stdout
    assert re.search(r"^throughput: [\d.]+ cancellations/s", run.stdout, re.M), run.stdout
    assert re.search(r"^latency ms: p50 [\d.]+, p95 [\d.]+", run.stdout, re.M), run.stdout
