"""booking-reschedule through its HTTP interface: functions-framework's app and the served
process (most tests run once through each), with the real Google client talking to the
local Calendar API server.

A session moves in place: the same id, booking reference and calendar event (patched,
never deleted and re-created), its old slot released and the new one taken in one
UPDATE that the database checks by the booking rules. The move is audited (old and new
times, who, why); the status history is untouched. Everyone but the session's client,
its specialist and an admin hears NOT_FOUND, exactly as for a session that does not exist.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from shared.links import session_id_from_token
from tests.calendar_server import FakeCalendarServer
from tests.functions_fixtures import (
    CALENDAR_NUM_RETRIES, REPO_ROOT, Answer, BookableSpecialist, FunctionClient, FunctionsApi, FunctionsEnv, ServedClient,
    bearer, fetch, service_bearer, service_token,
)
from tests.notifications_fixtures import event_of, invitation_of, send_due, subject_of, to
from tests.support import MISSING, Person, body_with, create_person
from tests.test_sentry import CaptureTransport, sentry  # noqa: F401 - the fixture

CALENDAR_ID = "rosa.lind@clinic.test"
TRIES_PER_CALL = 1 + int(CALENDAR_NUM_RETRIES)
REASON = "A work meeting moved"


# -- helpers --------------------------------------------------------------------------

@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/London")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", calendar_id=CALENDAR_ID)


def at(specialist: BookableSpecialist, days_ahead: int, local_time: str) -> datetime:
    return specialist.slot(days_ahead=days_ahead, local_time=local_time)


@pytest.fixture
def session_at(booked_session, specialist: BookableSpecialist, client: Person) -> Callable[..., dict]:
    """A confirmed session (with its event) at a local time of the specialist's, `days_ahead` days on."""
    def make(days_ahead: int = 3, local_time: str = "10:00", *, who: Person | None = None,
             with_: BookableSpecialist | None = None) -> dict:
        chosen = with_ or specialist
        starts_at = at(chosen, days_ahead, local_time)
        # calendar_synced_at: its event exists (as booking-create leaves it), so calendar-sync creates none.
        return booked_session(chosen, who or client, starts_in=starts_at - datetime.now(timezone.utc),
                              calendar_synced_at=datetime.now(timezone.utc))
    return make


@pytest.fixture
def session(session_at) -> dict:
    return session_at(3, "10:00")


def reschedule(api: FunctionClient, caller: Person, booking_id: uuid.UUID | str, starts_at: datetime | str,
               reason: Any = MISSING, **token_options: Any) -> Answer:
    body = {"booking_id": str(booking_id),
            "starts_at": starts_at.isoformat() if isinstance(starts_at, datetime) else starts_at}
    if reason is not MISSING:
        body["reason"] = reason
    return api.post_json(body, headers=bearer(caller, **token_options))


def footprint(conn: psycopg.Connection, server: FakeCalendarServer) -> dict[str, Any]:
    """Everything a move can change: the sessions' times and states, rows written, calendar requests."""
    sessions = conn.execute("select id, starts_at, ends_at, status from public.sessions order by id").fetchall()
    counts = conn.execute(
        """select (select count(*) from public.booking_status_history) as history,
                  (select count(*) from public.audit_log) as audit_log,
                  (select count(*) from private.calendar_patches) as calendar_patches,
                  (select count(*) from private.email_outbox) as emails"""
    ).fetchone()
    return {"sessions": sessions, **counts, "calendar_requests": len(server.requests)}


def assert_error(answer: Answer, status: int, code: str) -> dict:
    body = answer.json()
    assert (answer.status, body.get("success"), body.get("error")) == (status, False, code), body
    assert {"success", "error", "message"} <= set(body) <= {"success", "error", "message", "details"}, body
    assert body["message"], body
    return body


def event_times(server: FakeCalendarServer, session_id: uuid.UUID) -> tuple[datetime, datetime]:
    event = server.events(CALENDAR_ID)[session_id.hex]
    return (datetime.fromisoformat(event["start"]["dateTime"]), datetime.fromisoformat(event["end"]["dateTime"]))


def assert_moved(conn: psycopg.Connection, server: FakeCalendarServer, session: dict, answer: Answer, *,
                 to: datetime, by: Person, actor_role: str, reason: str | None = None,
                 channel: str = "booking-reschedule") -> None:
    """The session moved in place, audited once, its history untouched, its event patched once."""
    length = session["ends_at"] - session["starts_at"]
    assert answer.status == 200, answer.text
    body = answer.json()
    assert {k: body[k] for k in ("success", "message", "session_id", "booking_id", "booking_reference", "status")} == {
        "success": True, "message": "Session moved.", "session_id": str(session["id"]),
        "booking_id": str(session["id"]), "booking_reference": session["booking_reference"], "status": "confirmed"}
    assert (datetime.fromisoformat(body["starts_at"]), datetime.fromisoformat(body["ends_at"])) == (to, to + length)
    assert (datetime.fromisoformat(body["previous_starts_at"]),
            datetime.fromisoformat(body["previous_ends_at"])) == (session["starts_at"], session["ends_at"])
    row = conn.execute("select * from public.sessions where id = %s", [session["id"]]).fetchone()
    assert (row["starts_at"], row["ends_at"], row["status"], row["booking_reference"],
            row["google_calendar_event_id"], row["price"]) == (
        to, to + length, "confirmed", session["booking_reference"], session["google_calendar_event_id"],
        session["price"])
    assert conn.execute("select count(*) as n from public.sessions").fetchone()["n"] >= 1
    history = conn.execute("select from_status, to_status from public.booking_status_history where session_id = %s",
                           [session["id"]]).fetchall()
    assert history == [{"from_status": None, "to_status": "confirmed"}], "a move is no status change"
    audit = conn.execute(
        """select action, actor_id, actor_role, status, old_values, new_values from public.audit_log
           where entity_id = %s""", [session["id"]]).fetchall()
    assert audit == [{
        "action": "session_moved", "actor_id": by.id, "actor_role": actor_role, "status": "success",
        "old_values": {"starts_at": session["starts_at"].isoformat(), "ends_at": session["ends_at"].isoformat()},
        "new_values": {"starts_at": to.isoformat(), "ends_at": (to + length).isoformat(), "reason": reason,
                       "channel": channel},
    }]
    patches = server.api_calls("PATCH")
    assert [(call.path, call.status) for call in patches] == [
        (f"/calendar/v3/calendars/{CALENDAR_ID.replace('@', '%40')}/events/{session['id'].hex}", 200)]
    assert set(patches[0].json()) == {"start", "end"}, "only the times are sent"
    assert list(server.events(CALENDAR_ID)) == [session["id"].hex], "one event, the same id"
    assert event_times(server, session["id"]) == (to, to + length)
    assert server.api_calls("DELETE") == [] and server.api_calls("POST") == []
    queued = conn.execute("select completed_at, attempts, last_error from private.calendar_patches").fetchall()
    assert len(queued) == 1 and queued[0]["completed_at"] is not None and queued[0]["last_error"] is None


# -- who may move it ------------------------------------------------------------------------

@pytest.mark.parametrize("who", ["client", "specialist", "admin"])
def test_the_sessions_client_specialist_or_an_admin_moves_it_in_place(
        who: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    caller = {"client": client, "specialist": specialist.person,
              "admin": create_person(committed_db, "admin", full_name="Ada Admin")}[who]
    new_start = at(specialist, 4, "15:00")

    answer = reschedule(functions_api.booking_reschedule, caller, session["id"], new_start, reason=REASON)

    assert_moved(committed_db, functions_env.server, session, answer, to=new_start, by=caller, actor_role=who,
                 reason=REASON)
    token = parse_qs(urlsplit(answer.json()["cancel_url"]).query)["token"][0]
    assert session_id_from_token(token) == session["id"], "its link names the same session"


def test_a_move_by_fifteen_minutes_overlaps_its_own_slot_and_works(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    later = session["starts_at"] + timedelta(minutes=15)

    answer = reschedule(functions_api.booking_reschedule, client, session["id"], later)

    assert_moved(committed_db, functions_env.server, session, answer, to=later, by=client, actor_role="client")


def test_the_old_slot_is_free_at_once_and_the_new_one_taken(
        functions_api: FunctionsApi, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, session: dict) -> None:
    other = create_person(committed_db, "client", full_name="Bob Other")
    new_start = at(specialist, 4, "15:00")
    assert reschedule(functions_api.booking_reschedule, client, session["id"], new_start).status == 200

    into_new = functions_api.booking_create.post_json(
        {"specialist_id": str(specialist.id), "starts_at": new_start.isoformat()}, headers=bearer(other))
    into_old = functions_api.booking_create.post_json(
        {"specialist_id": str(specialist.id), "starts_at": session["starts_at"].isoformat()}, headers=bearer(other))

    assert_error(into_new, 409, "SLOT_UNAVAILABLE")
    assert into_old.status == 200, into_old.text


def _someone_else(committed_db: psycopg.Connection, bookable_specialist, kind: str) -> Person:
    if kind == "another client":
        return create_person(committed_db, "client")
    return bookable_specialist(full_name="Dr Other").person


@pytest.mark.parametrize("kind", ["another client", "another specialist"])
def test_someone_elses_session_is_not_found_exactly_like_a_missing_one(
        kind: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, session: dict, bookable_specialist) -> None:
    stranger = _someone_else(committed_db, bookable_specialist, kind)
    missing_id = uuid.uuid4()
    new_start = at(specialist, 4, "15:00")
    before = footprint(committed_db, functions_env.server)

    theirs = reschedule(functions_api.booking_reschedule, stranger, session["id"], new_start)
    missing = reschedule(functions_api.booking_reschedule, stranger, missing_id, new_start)

    assert_error(theirs, 404, "NOT_FOUND"), assert_error(missing, 404, "NOT_FOUND")
    assert json.loads(theirs.text.replace(str(session["id"]), "<id>")) == \
        json.loads(missing.text.replace(str(missing_id), "<id>"))
    assert footprint(committed_db, functions_env.server) == before


UNAUTHORIZED_HEADERS: dict[str, Callable[[Person], dict[str, str]]] = {
    "no Authorization header": lambda client: {},
    "not a JWT": lambda client: {"Authorization": "Bearer not-a-jwt"},
    "signed with another secret": lambda client: bearer(client, secret="x" * 64),
    "expired": lambda client: bearer(client, expires_in=-3600),
    "the service key": lambda client: {"Authorization": f"Bearer {service_token()}"},
    "user without a profile": lambda client: bearer(uuid.uuid4()),
}


@pytest.mark.parametrize("case", list(UNAUTHORIZED_HEADERS))
def test_a_caller_without_a_valid_user_token_is_unauthorized(
        case: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    before = footprint(committed_db, functions_env.server)

    answer = functions_api.booking_reschedule.post_json(
        {"booking_id": str(session["id"]), "starts_at": at(specialist, 4, "15:00").isoformat()},
        headers=UNAUTHORIZED_HEADERS[case](client))

    assert_error(answer, 401, "UNAUTHORIZED")
    assert footprint(committed_db, functions_env.server) == before


def test_an_anonymous_sign_in_is_forbidden(functions_api: FunctionsApi, functions_env: FunctionsEnv,
                                           committed_db: psycopg.Connection, client: Person,
                                           specialist: BookableSpecialist, session: dict) -> None:
    before = footprint(committed_db, functions_env.server)

    answer = reschedule(functions_api.booking_reschedule, client, session["id"], at(specialist, 4, "15:00"),
                        is_anonymous=True)

    assert_error(answer, 403, "FORBIDDEN")
    assert footprint(committed_db, functions_env.server) == before


# -- the session's state and the rules ---------------------------------------------------------

def test_a_cancelled_or_started_session_does_not_move(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict, booked_session) -> None:
    assert functions_api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "x"},
                                                  headers=bearer(client)).status == 200
    started = booked_session(specialist, client, starts_in=timedelta(minutes=-10))
    before = footprint(committed_db, functions_env.server)

    cancelled = reschedule(functions_api.booking_reschedule, specialist.person, session["id"],
                           at(specialist, 4, "15:00"))
    in_progress = reschedule(functions_api.booking_reschedule, specialist.person, started["id"],
                             at(specialist, 4, "15:00"))

    assert assert_error(cancelled, 409, "ALREADY_CANCELLED")["message"] == \
        f"Session {session['id']} is cancelled and cannot be moved"
    assert assert_error(in_progress, 409, "BOOKING_IN_PAST")["message"] == \
        f"Session {started['id']} has already started and can no longer be moved"
    assert footprint(committed_db, functions_env.server) == before


@pytest.mark.parametrize("transport", ["app", "served"])
@pytest.mark.parametrize(("who", "starts_in_hours", "expected"), [
    pytest.param("client", 47, "RESCHEDULE_TOO_LATE", id="client inside the notice"),
    pytest.param("client", 49, None, id="client just outside the notice"),
    pytest.param("specialist", 30, None, id="specialist inside the notice (exempt)"),
    pytest.param("admin", 30, None, id="admin inside the notice (exempt)"),
])
def test_a_client_cannot_move_a_session_inside_the_minimum_cancellation_notice(
        transport: str, who: str, starts_in_hours: int, expected: str | None, configured_functions_api,
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, booked_session) -> None:
    """Otherwise a client would move the session out of the notice, then cancel it."""
    api = configured_functions_api(transport, CANCELLATION_MIN_NOTICE_HOURS="48").booking_reschedule
    soon = booked_session(specialist, client, starts_in=timedelta(hours=starts_in_hours))
    caller = {"client": client, "specialist": specialist.person,
              "admin": create_person(committed_db, "admin")}[who]
    before = footprint(committed_db, functions_env.server)

    answer = reschedule(api, caller, soon["id"], at(specialist, 6, "11:00"))

    if expected is None:
        assert answer.status == 200, answer.text
    else:
        body = assert_error(answer, 409, expected)
        assert body["message"] == "Sessions must be moved at least 48 hours ahead; please contact your specialist"
        assert footprint(committed_db, functions_env.server) == before


SLOT_REFUSALS = {
    # name: (days ahead, local time, reason)
    "inside the booking notice": (0, "23:00", "too_soon"),
    "beyond the maximum advance": (40, "10:00", "too_far"),
    "outside the specialist's hours": (4, "21:00", "outside_hours"),
    "onto the specialist's other session": (5, "10:20", "taken"),
    "onto the client's session with someone else": (5, "14:00", "taken"),
}


@pytest.mark.parametrize("case", list(SLOT_REFUSALS))
def test_a_slot_the_rules_refuse_is_refused_and_nothing_changes(
        case: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict, session_at, bookable_specialist) -> None:
    session_at(5, "10:00", who=create_person(committed_db, "client"))
    session_at(5, "14:00", with_=bookable_specialist(full_name="Dr Other", calendar_id="other@clinic.test"))
    days, local_time, reason = SLOT_REFUSALS[case]
    before = footprint(committed_db, functions_env.server)

    answer = reschedule(functions_api.booking_reschedule, client, session["id"], at(specialist, days, local_time))

    body = assert_error(answer, 409, "SLOT_UNAVAILABLE")
    assert body["details"] == {"reason": reason}
    assert footprint(committed_db, functions_env.server) == before


def test_a_recurring_occurrence_moves_alone_and_the_recurrence_is_unchanged(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    first_day = specialist.local_day(3)
    recurring_id = committed_db.execute(
        """insert into public.recurring_bookings (user_id, specialist_id, frequency, start_date, start_time,
                                                  duration_minutes, next_booking_date)
           values (%s, %s, 'weekly', %s, '10:00', 50, %s) returning id""",
        [client.id, specialist.id, first_day, first_day]).fetchone()["id"]

    def dispatch() -> None:  # the dispatcher's SQL, 20 days ahead
        committed_db.execute("select * from private.dispatch_recurring_bookings(now(), 20, false)").fetchall()

    dispatch()
    occurrences = committed_db.execute(
        "select id, starts_at, occurrence_date from public.sessions where recurring_booking_id = %s order by starts_at",
        [recurring_id]).fetchall()
    assert len(occurrences) >= 2
    moved_one, *others = occurrences
    new_start = at(specialist, 4, "16:00")
    recurrence_before = committed_db.execute("select * from public.recurring_bookings where id = %s",
                                             [recurring_id]).fetchone()

    answer = reschedule(functions_api.booking_reschedule, client, moved_one["id"], new_start)

    assert answer.status == 200, answer.text
    assert committed_db.execute("select * from public.recurring_bookings where id = %s",
                                [recurring_id]).fetchone() == recurrence_before
    dispatch()  # the next run makes nothing again for the moved occurrence's date
    after = committed_db.execute(
        "select id, starts_at, occurrence_date from public.sessions where recurring_booking_id = %s order by starts_at",
        [recurring_id]).fetchall()
    assert {r["id"]: (r["starts_at"], r["occurrence_date"]) for r in after} == {
        **{r["id"]: (r["starts_at"], r["occurrence_date"]) for r in others},
        moved_one["id"]: (new_start, moved_one["occurrence_date"])}


# -- bad input ---------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
VALID = {"booking_id": "{session}", "starts_at": "{new_start}", "reason": REASON}


def _with(**changes: Any) -> dict:
    return body_with(VALID, **changes)


BAD_REQUESTS: dict[str, tuple[str, Any, dict[str, str], int, str]] = {
    "booking_id missing": ("POST", _with(booking_id=MISSING), JSON, 400, "INVALID_REQUEST"),
    "starts_at missing": ("POST", _with(starts_at=MISSING), JSON, 400, "INVALID_REQUEST"),
    "empty object": ("POST", {}, JSON, 400, "INVALID_REQUEST"),
    "an extra field": ("POST", _with(ends_at="{new_start}"), JSON, 400, "INVALID_REQUEST"),
    "booking_id not a UUID": ("POST", _with(booking_id="BK-2026-000001"), JSON, 400, "INVALID_REQUEST"),
    "booking_id a number": ("POST", _with(booking_id=42), JSON, 400, "INVALID_REQUEST"),
    "starts_at without an offset": ("POST", _with(starts_at="2030-01-01T10:00:00"), JSON, 400, "INVALID_REQUEST"),
    "starts_at a date": ("POST", _with(starts_at="tomorrow"), JSON, 400, "INVALID_REQUEST"),
    "starts_at a number": ("POST", _with(starts_at=1767261600), JSON, 400, "INVALID_REQUEST"),
    "starts_at in the year 10000": ("POST", _with(starts_at="9999-12-31T23:00:00-05:00"), JSON, 400,
                                    "INVALID_REQUEST"),
    "starts_at its current start": ("POST", _with(starts_at="{current_start}"), JSON, 400, "INVALID_REQUEST"),
    "reason a number": ("POST", _with(reason=7), JSON, 400, "INVALID_REQUEST"),
    "reason 1,001 characters": ("POST", _with(reason="x" * 1001), JSON, 400, "INVALID_REQUEST"),
    "reason with a NUL character": ("POST", _with(reason="late\u0000"), JSON, 400, "INVALID_REQUEST"),
    "malformed JSON": ("POST", b'{"booking_id": ', JSON, 400, "INVALID_REQUEST"),
    "a JSON array": ("POST", b'["{session}"]', JSON, 400, "INVALID_REQUEST"),
    "a form": ("POST", b"booking_id=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
               "UNSUPPORTED_MEDIA_TYPE"),
    "a 1 MB body": ("POST", b'{"booking_id": "{session}", "reason": "' + b"x" * 1_000_000 + b'"}', JSON, 413,
                    "PAYLOAD_TOO_LARGE"),
    "GET": ("GET", None, {}, 405, "METHOD_NOT_ALLOWED"),
    "PATCH": ("PATCH", VALID, JSON, 405, "METHOD_NOT_ALLOWED"),
}


def _raw(body: Any, names: dict[str, str]) -> bytes | None:
    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, str):
            return value.format(**names)
        if isinstance(value, bytes):
            return value.replace(b"{session}", names["session"].encode())
        return value
    payload = fill(body)
    return json.dumps(payload).encode() if isinstance(payload, dict | list) and not isinstance(body, bytes) \
        else payload


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_its_error_and_changes_nothing(
        case: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    method, body, headers, status, code = BAD_REQUESTS[case]
    names = {"session": str(session["id"]), "new_start": at(specialist, 4, "15:00").isoformat(),
             "current_start": session["starts_at"].isoformat()}
    before = footprint(committed_db, functions_env.server)

    answer = functions_api.booking_reschedule.request(method, body=_raw(body, names),
                                                      headers={**headers, **bearer(client)})

    found = assert_error(answer, status, code)
    if case == "starts_at its current start":
        assert found["details"] == {"field": "starts_at"} and "already starts at" in found["message"]
    if status == 405:
        assert answer.header("Allow") == "POST"
    assert footprint(committed_db, functions_env.server) == before
    assert functions_env.server.requests == []


def test_the_valid_request_of_the_bad_input_table_moves(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    """The table's baseline: only the named change makes each case fail."""
    new_start = at(specialist, 4, "15:00")
    names = {"session": str(session["id"]), "new_start": new_start.isoformat()}

    answer = functions_api.booking_reschedule.request("POST", body=_raw(VALID, names),
                                                      headers={**JSON, **bearer(client)})

    assert_moved(committed_db, functions_env.server, session, answer, to=new_start, by=client, actor_role="client",
                 reason=REASON)


# -- the calendar ---------------------------------------------------------------------------------

def _run_job(api: FunctionClient) -> dict:
    answer = api.post_json({}, headers=service_bearer())
    assert answer.status == 200, answer.text
    return answer.json()


def _make_due(conn: psycopg.Connection) -> None:
    conn.execute("update private.calendar_patches set next_attempt_at = now() where completed_at is null")


@pytest.mark.parametrize("outage", ["500", "timeout"])
def test_calendar_down_during_a_move_the_move_succeeds_and_the_job_moves_the_event(
        outage: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    server = functions_env.server
    if outage == "500":
        server.fail(503, times=TRIES_PER_CALL, method="PATCH")
    else:  # Google moves the event, then does not answer in time
        server.fail(hang=5, times=TRIES_PER_CALL, method="PATCH")
    new_start = at(specialist, 4, "15:00")

    answer = reschedule(functions_api.booking_reschedule, client, session["id"], new_start)

    assert answer.status == 200, answer.text
    assert committed_db.execute("select starts_at from public.sessions").fetchone()["starts_at"] == new_start
    pending = committed_db.execute("select * from private.calendar_patches").fetchone()
    assert (pending["completed_at"], pending["attempts"], pending["starts_at"], pending["event_id"]) == (
        None, 1, new_start, session["id"].hex)
    assert pending["last_error"].startswith("Google Calendar")
    assert _run_job(functions_api.calendar_sync)["events_moved"] == 0, "backed off: not due yet"

    _make_due(committed_db)  # a minute later; Google is back
    first, second = _run_job(functions_api.calendar_sync), _run_job(functions_api.calendar_sync)

    assert (first["events_moved"], first["moves_failed"], second["events_moved"]) == (1, 0, 0)
    assert list(server.events(CALENDAR_ID)) == [session["id"].hex], "exactly one event, the same id"
    assert event_times(server, session["id"]) == (new_start, new_start + timedelta(minutes=50))
    assert server.api_calls("DELETE") == [] and server.api_calls("POST") == []
    done = committed_db.execute("select * from private.calendar_patches").fetchone()
    assert (done["attempts"], done["last_error"]) == (2, None) and done["completed_at"] is not None


def test_a_later_move_supersedes_a_queued_patch_and_a_cancel_then_deletes_the_event(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    server = functions_env.server
    server.fail(503, times=None, method="PATCH")  # Google keeps failing the moves
    first, second = at(specialist, 4, "15:00"), at(specialist, 5, "09:00")

    assert reschedule(functions_api.booking_reschedule, client, session["id"], first).status == 200
    assert reschedule(functions_api.booking_reschedule, client, session["id"], second).status == 200

    pending = committed_db.execute("select starts_at, attempts, completed_at from private.calendar_patches"
                                   ).fetchall()
    assert pending == [{"starts_at": second, "attempts": 1, "completed_at": None}], "one row, the latest times"

    server.reset()
    server.put_event(CALENDAR_ID, {"id": session["id"].hex, "start": {"dateTime": session["starts_at"].isoformat()},
                                   "end": {"dateTime": session["ends_at"].isoformat()}})
    _make_due(committed_db)
    assert _run_job(functions_api.calendar_sync)["events_moved"] == 1
    assert event_times(server, session["id"]) == (second, second + timedelta(minutes=50))

    # Moved again while Google fails, then cancelled: the event ends deleted, the patch superseded.
    server.fail(503, times=None, method="PATCH")
    third = at(specialist, 6, "09:00")
    assert reschedule(functions_api.booking_reschedule, client, session["id"], third).status == 200
    cancelled = functions_api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "Ill"},
                                                       headers=bearer(client))
    assert cancelled.status == 200, cancelled.text
    _make_due(committed_db)
    report = _run_job(functions_api.calendar_sync)

    assert (report["events_moved"], report["moves_failed"]) == (0, 0)
    assert server.events(CALENDAR_ID) == {}
    assert server.deleted_event_ids(CALENDAR_ID) == {session["id"].hex}
    patch = committed_db.execute("select completed_at, last_error from private.calendar_patches").fetchone()
    assert patch["completed_at"] is not None
    assert patch["last_error"] == "Superseded: the session was cancelled and its event is deleted."


# -- concurrency (the served process) ------------------------------------------------------------

def _all_at_once(calls: list[Callable[[], Answer]]) -> list[Answer]:
    barrier = threading.Barrier(len(calls))
    answers: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            answers[index] = calls[index]()
        except Exception as exc:  # kept, so that the test reports it
            answers[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(isinstance(a, Answer) for a in answers), answers
    return answers


def test_twenty_concurrent_moves_of_different_sessions_into_one_slot_one_wins(
        served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, session_at) -> None:
    api = ServedClient(served_functions.base_url, "booking-reschedule")
    clients = [create_person(committed_db, "client", full_name=f"Client {i}") for i in range(20)]
    # Twenty sessions on days 3 to 7, four a day, each with its own client.
    sessions = [session_at(3 + i // 4, f"{9 + 2 * (i % 4):02d}:00", who=clients[i]) for i in range(20)]
    target = at(specialist, 9, "12:00")
    before = {r["id"]: r for r in committed_db.execute("select id, starts_at, ends_at, status from public.sessions")}

    answers = _all_at_once([lambda i=i: reschedule(api, clients[i], sessions[i]["id"], target) for i in range(20)])

    outcomes = sorted((a.status, a.json().get("error"), (a.json().get("details") or {}).get("reason"))
                      for a in answers)
    assert outcomes == [(200, None, None)] + [(409, "SLOT_UNAVAILABLE", "taken")] * 19
    (winner,) = [sessions[i]["id"] for i, a in enumerate(answers) if a.status == 200]
    after = {r["id"]: r for r in committed_db.execute("select id, starts_at, ends_at, status from public.sessions")}
    assert {k: v for k, v in after.items() if k != winner} == {k: v for k, v in before.items() if k != winner}
    assert after[winner]["starts_at"] == target
    assert committed_db.execute("select count(*) as n from public.audit_log where action = 'session_moved'"
                                ).fetchone()["n"] == 1
    assert [call.path.rsplit("/", 1)[1] for call in functions_env.server.api_calls("PATCH")] == [winner.hex]
    moved_notices = committed_db.execute(
        "select session_id, count(*) as n from private.email_outbox where kind = 'session_moved' group by session_id"
    ).fetchall()
    assert moved_notices == [{"session_id": winner, "n": 2}], "one notice to each party of the winner, no other"
    assert committed_db.execute("select count(*) as n from private.calendar_patches").fetchone()["n"] == 1


@pytest.mark.parametrize("round_", range(3))
def test_a_move_racing_a_cancel_of_the_same_session_ends_in_one_consistent_outcome(
        round_: int, served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    move_api = ServedClient(served_functions.base_url, "booking-reschedule")
    cancel_api = ServedClient(served_functions.base_url, "booking-cancel")
    target = at(specialist, 5, "16:00")

    moved, cancelled = _all_at_once([
        lambda: reschedule(move_api, client, session["id"], target),
        lambda: cancel_api.post_json({"booking_id": str(session["id"]), "reason": "Ill"},
                                     headers=bearer(specialist.person)),
    ])

    assert cancelled.status == 200, cancelled.text  # a cancel always wins in the end: it is never refused here
    row = committed_db.execute("select status, starts_at from public.sessions").fetchone()
    assert row["status"] == "cancelled"
    moves = committed_db.execute("select count(*) as n from public.audit_log where action = 'session_moved'"
                                 ).fetchone()["n"]
    if moved.status == 200:  # the move came first: the cancel then cancelled the moved session
        assert (row["starts_at"], moves) == (target, 1)
    else:  # the cancel came first: the move was refused and changed nothing
        assert_error(moved, 409, "ALREADY_CANCELLED")
        assert (row["starts_at"], moves) == (session["starts_at"], 0)
    assert functions_env.server.events(CALENDAR_ID) == {}, "the event ends deleted either way"
    assert committed_db.execute("select count(*) as n from private.calendar_patches where completed_at is null"
                                ).fetchone()["n"] == 0


# -- emails ------------------------------------------------------------------------------------------

def test_one_move_sends_each_party_one_moved_invitation_with_the_same_uid_and_a_higher_sequence(
        functions_api: FunctionsApi, mail_env, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict) -> None:
    assert send_due(notifications_app)["sent"] == 2  # the confirmations
    confirmations = mail_env.server.messages()
    mail_env.server.clear()
    new_start = at(specialist, 4, "15:00")

    answer = reschedule(functions_api.booking_reschedule, client, session["id"], new_start)
    report = send_due(notifications_app)

    assert answer.status == 200, answer.text
    assert report["sent"] == 2
    received = mail_env.server.messages()
    assert sorted(r.rcpt_tos for r in received) == sorted([(client.email,), (specialist.person.email,)])
    for party in (client.email, specialist.person.email):
        (moved,) = to(received, party)
        (confirmation,) = to(confirmations, party)
        assert "has moved" in subject_of(moved)
        before, after = event_of(invitation_of(confirmation)), event_of(invitation_of(moved))
        assert str(invitation_of(moved)["METHOD"]) == "REQUEST"
        assert str(after["UID"]) == str(before["UID"]) and str(after["UID"]).startswith(f"session-{session['id']}@")
        assert int(after["SEQUENCE"]) > int(before["SEQUENCE"])
        assert (after.decoded("DTSTART"), after.decoded("DTEND")) == (new_start, new_start + timedelta(minutes=50))
    assert send_due(notifications_app)["sent"] == 0, "nothing more"


def test_a_reminder_queued_for_the_old_time_is_not_sent_after_a_move(
        functions_api: FunctionsApi, mail_env, notifications_app, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    # A session in 110 minutes, booked two days ago: its two-hour reminder for that time is queued.
    starts_at = (datetime.now(timezone.utc) + timedelta(minutes=110)).replace(microsecond=0)
    session = committed_db.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at, created_at)
           values (%s, %s, %s, %s, now() - interval '2 days') returning *""",
        [specialist.id, client.id, starts_at, starts_at + timedelta(minutes=50)]).fetchone()
    assert committed_db.execute("select private.queue_due_reminders() as n").fetchone()["n"] == 1
    new_start = at(specialist, 3, "10:00")

    answer = reschedule(functions_api.booking_reschedule, specialist.person, session["id"], new_start)
    send_due(notifications_app)

    assert answer.status == 200, answer.text
    outbox = committed_db.execute(
        "select kind, recipient_id, for_starts_at, status, last_error from private.email_outbox "
        "where session_id = %s order by id", [session["id"]]).fetchall()
    assert sorted((r["recipient_id"], r["for_starts_at"], r["status"]) for r in outbox
                  if r["kind"] == "session_moved") == sorted([(client.id, new_start, "sent"),
                                                              (specialist.id, new_start, "sent")])
    (reminder,) = [r for r in outbox if r["kind"] == "reminder"]
    assert (reminder["for_starts_at"], reminder["status"], reminder["last_error"]) == (
        starts_at, "skipped", "The session has moved.")
    subjects = [subject_of(m) for m in mail_env.server.messages()]
    assert not [s for s in subjects if s.startswith("Reminder")], subjects
    assert len([s for s in subjects if "has moved" in s]) == 2, subjects


# -- the benchmark ---------------------------------------------------------------------------------

def test_the_reschedule_benchmark_runs_in_its_small_mode() -> None:
    """`python -m tests.bench.booking_reschedule --small` end to end: its own cluster, calendar and server."""
    run = subprocess.run([sys.executable, "-m", "tests.bench.booking_reschedule", "--small"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)

    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^bookings: 40 succeeded, 0 failed$", run.stdout, re.M), run.stdout
    assert re.search(r"^reschedules: 40 succeeded, 0 failed$", run.stdout, re.M), run.stdout
    assert re.search(r"^throughput: [\d.]+ reschedules/s", run.stdout, re.M), run.stdout
    assert re.search(r"^p95 ratio reschedule/create: [\d.]+ \(target <= 1.5\)$", run.stdout, re.M), run.stdout
    # 40 measured and one warm-up booking and move per caller; every event at its session's new time.
    assert re.search(r"^checked: 44 confirmed sessions, 44 calendar events, 44 moves audited, "
                     r"0 events not at their session's time, 0 calendar patches pending$", run.stdout, re.M), \
        run.stdout


def test_a_move_failing_for_a_day_is_reported_once_and_degrades_health_until_it_lands(
        served_functions, configured_functions_api, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, session: dict, sentry: CaptureTransport) -> None:  # noqa: F811
    api = configured_functions_api("app")  # in this process: Sentry's events are captured here
    health_url = f"{served_functions.base_url}/health"
    functions_env.server.fail(503, times=None, method="PATCH")
    new_start = at(specialist, 4, "15:00")
    assert reschedule(api.booking_reschedule, client, session["id"], new_start).status == 200
    assert fetch(health_url).json()["calendar_moves_pending"] == 1
    committed_db.execute("update private.calendar_patches set queued_at = now() - interval '25 hours', "
                         "next_attempt_at = now()")

    first, second = _run_job(api.calendar_sync), _run_job(api.calendar_sync)

    assert (first["stuck_reported"], first["moves_failed"], second["stuck_reported"]) == (1, 1, 0)
    messages = [e.get("message") or e.get("logentry", {}).get("message", "") for e in sentry.events]
    assert [m for m in messages if "still not moved" in m] == [
        f"Calendar event of moved session {session['id']} still not moved after 2 attempts over a day"]
    health = fetch(health_url)
    assert (health.status, health.json()["status"], health.json()["calendar_moves_stuck"]) == (503, "degraded", 1)

    functions_env.server.reset()  # Google is back
    functions_env.server.put_event(CALENDAR_ID, {"id": session["id"].hex,
                                                 "start": {"dateTime": session["starts_at"].isoformat()},
                                                 "end": {"dateTime": session["ends_at"].isoformat()}})
    _make_due(committed_db)
    assert _run_job(api.calendar_sync)["events_moved"] == 1
    health = fetch(health_url)
    assert (health.status, health.json()["calendar_moves_stuck"], health.json()["calendar_moves_pending"]) == (
        200, 0, 0)
    assert event_times(functions_env.server, session["id"])[0] == new_start
