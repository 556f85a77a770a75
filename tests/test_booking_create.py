"""booking-create through its HTTP interface: functions-framework's app and the served
process (most tests run once through each), with the real Google client talking to
the local Calendar API server and the functions' own pooled database connections.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import uuid
from datetime import date, datetime, time as clock, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shared import calendar_sync
from shared.links import session_id_from_token
from tests.calendar_server import FakeCalendarServer
from tests.functions_fixtures import (
    REPO_ROOT, Answer, BookableSpecialist, FunctionClient, FunctionsEnv, ServedClient, Window, bearer, post_streamed,
    user_token, weekly,
)
from tests.support import MISSING, Person, body_with, create_person

EVENTS_PATH = "/calendar/v3/calendars/"
# booking-create's settings for the tests that change them (through both doors).
CONFIGURED = {"BOOKING_MIN_NOTICE_HOURS": "48", "BOOKING_MAX_ADVANCE_DAYS": "400"}


# -- helpers --------------------------------------------------------------------------

@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/London")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(calendar_id="rosa.lind@clinic.test")


def book(api: FunctionClient, caller: Person, specialist_id: uuid.UUID | str, starts_at: datetime,
         **fields: Any) -> Answer:
    return api.post_json({"specialist_id": str(specialist_id), "starts_at": starts_at.isoformat(), **fields},
                         headers=bearer(caller))


def footprint(conn: psycopg.Connection, server: FakeCalendarServer) -> dict[str, int]:
    """Everything a booking can change: rows written, and requests the Calendar API received."""
    counts = conn.execute(
        """select (select count(*) from public.sessions) as sessions,
                  (select count(*) from public.audit_log) as audit_log,
                  (select count(*) from public.booking_status_history) as history,
                  (select count(*) from private.calendar_deletions) as calendar_deletions"""
    ).fetchone()
    return {**counts, "calendar_requests": len(server.requests)}


def assert_error(answer: Answer, status: int, code: str, reason: str | None = None) -> None:
    body = answer.json()
    assert (answer.status, body["success"], body["error"]) == (status, False, code), body
    assert body["message"]
    if reason is not None:
        assert body["details"] == {"reason": reason}


def assert_booked(answer: Answer) -> dict:
    body = answer.json()
    assert answer.status == 200 and body["success"] is True, body
    return body


def insert_session(conn: psycopg.Connection, specialist_id: uuid.UUID, client_id: uuid.UUID,
                   starts_at: datetime, minutes: int = 50, status: str = "confirmed") -> uuid.UUID:
    row = conn.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           values (%s, %s, %s, %s) returning id""",
        [specialist_id, client_id, starts_at, starts_at + timedelta(minutes=minutes)],
    ).fetchone()
    if status == "cancelled":
        conn.execute("insert into public.booking_cancellations (booking_id, reason) values (%s, 'set-up')",
                     [row["id"]])
    return row["id"]


# -- seed 000: Session created on successful booking ------------------------------------

def test_session_created_on_successful_booking(booking_api: FunctionClient, functions_env: FunctionsEnv,
                                               committed_db: psycopg.Connection, client: Person,
                                               specialist: BookableSpecialist) -> None:
    # An earlier, different rate: the session must carry the current one.
    changed = datetime.now(timezone.utc) - timedelta(days=10)
    committed_db.execute("update public.specialist_rates set effective_from = %s where specialist_id = %s",
                         [changed, specialist.id])
    committed_db.execute(
        """insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes,
                                                effective_from, effective_to)
           values (%s, 70, 'USD', 30, %s, %s)""",
        [specialist.id, changed - timedelta(days=80), changed],
    )
    starts_at = specialist.slot(days_ahead=3, local_time="10:00")

    answer = book(booking_api, client, specialist.id, starts_at)

    body = assert_booked(answer)
    assert set(body) == {"success", "session_id", "booking_id", "booking_reference", "starts_at", "ends_at",
                         "status", "cancel_url"}
    session_id = uuid.UUID(body["session_id"])
    assert body["booking_id"] == body["session_id"], "booking-cancel's name for the same id"
    assert body["status"] == "confirmed"
    assert datetime.fromisoformat(body["starts_at"]) == starts_at
    assert datetime.fromisoformat(body["ends_at"]) == starts_at + timedelta(minutes=50)
    assert re.fullmatch(r"BK-\d{4}-\d{6,}", body["booking_reference"])
    link = urlsplit(body["cancel_url"])
    assert body["cancel_url"].startswith(f"{functions_env.base_url}/token-cancel?")
    assert session_id_from_token(parse_qs(link.query)["token"][0]) == session_id

    session = committed_db.execute("select * from public.sessions where id = %s", [session_id]).fetchone()
    assert session["specialist_id"] == specialist.id and session["client_id"] == client.id
    assert (session["status"], session["starts_at"], session["booking_reference"]) == (
        "confirmed", starts_at, body["booking_reference"])
    assert session["google_calendar_event_id"] == session_id.hex
    assert (session["price"], session["currency"]) == (Decimal("95.00"), "EUR")

    events = functions_env.server.events("rosa.lind@clinic.test")
    assert list(events) == [session_id.hex]
    event = events[session_id.hex]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == starts_at
    assert datetime.fromisoformat(event["end"]["dateTime"]) == starts_at + timedelta(minutes=50)
    assert body["booking_reference"] in event["summary"]
    assert "Alice" not in str(event) and client.email not in str(event)
    assert len(functions_env.server.api_calls("POST")) == 1

    history = committed_db.execute(
        "select from_status, to_status, changed_by from public.booking_status_history where session_id = %s",
        [session_id]).fetchall()
    assert history == [{"from_status": None, "to_status": "confirmed", "changed_by": client.id}]
    audit = committed_db.execute(
        "select action, actor_id, actor_role, status, new_values from public.audit_log where entity_id = %s",
        [session_id]).fetchall()
    assert [(a["action"], a["actor_id"], a["actor_role"], a["status"]) for a in audit] == [
        ("session_booked", client.id, "client", "success")]
    assert audit[0]["new_values"]["specialist_id"] == str(specialist.id)


def test_booking_without_a_google_calendar_id_uses_the_primary_calendar(
        booking_api: FunctionClient, functions_env: FunctionsEnv, client: Person, bookable_specialist) -> None:
    specialist = bookable_specialist()

    body = assert_booked(book(booking_api, client, specialist.id, specialist.slot()))

    assert list(functions_env.server.events("primary")) == [uuid.UUID(body["session_id"]).hex]


def test_duration_and_session_type_are_taken_from_the_request(
        booking_api: FunctionClient, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist) -> None:
    committed_db.execute(
        """insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
           values (%s, 160, 'EUR', 90, now() - interval '1 day')""", [specialist.id])
    starts_at = specialist.slot()

    body = assert_booked(book(booking_api, client, specialist.id, starts_at, duration_minutes=90,
                              session_type="follow_up", special_requests="  Ground floor, please  "))

    session = committed_db.execute("select * from public.sessions where id = %s", [body["session_id"]]).fetchone()
    assert session["ends_at"] - session["starts_at"] == timedelta(minutes=90)
    assert (session["session_type"], session["special_requests"]) == ("follow_up", "Ground floor, please")
    assert (session["price"], session["currency"]) == (Decimal("160.00"), "EUR")  # the 90-minute rate, not 50's


def test_each_length_is_priced_at_its_own_rate_and_unoffered_lengths_are_refused(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    committed_db.execute(
        """insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
           values (%s, 300, 'EUR', 240, now() - interval '1 day')""", [specialist.id])

    long = assert_booked(book(booking_api, client, specialist.id, specialist.slot(3, "08:00"), duration_minutes=240))
    default = assert_booked(book(booking_api, client, specialist.id, specialist.slot(4, "10:00")))
    before = footprint(committed_db, functions_env.server)
    refused = book(booking_api, client, specialist.id, specialist.slot(5, "10:00"), duration_minutes=45)

    prices = {row["id"]: (row["ends_at"] - row["starts_at"], row["price"]) for row in committed_db.execute(
        "select id, starts_at, ends_at, price from public.sessions where client_id = %s", [client.id])}
    assert prices[uuid.UUID(long["session_id"])] == (timedelta(minutes=240), Decimal("300.00"))
    # No length given: the specialist's shortest current length, at its price.
    assert prices[uuid.UUID(default["session_id"])] == (timedelta(minutes=50), Decimal("95.00"))
    assert_error(refused, 400, "INVALID_REQUEST")
    assert refused.json()["message"] == "The specialist offers sessions of 50 or 240 minutes, not 45"
    assert footprint(committed_db, functions_env.server) == before


# -- who may book --------------------------------------------------------------------------

def test_a_specialist_cannot_book(booking_api: FunctionClient, functions_env: FunctionsEnv,
                                  committed_db: psycopg.Connection, specialist: BookableSpecialist,
                                  bookable_specialist) -> None:
    other = bookable_specialist(full_name="Dr Other")
    before = footprint(committed_db, functions_env.server)

    answer = book(booking_api, other.person, specialist.id, specialist.slot())

    assert_error(answer, 403, "FORBIDDEN")
    assert footprint(committed_db, functions_env.server) == before


def test_an_admin_cannot_book(booking_api: FunctionClient, functions_env: FunctionsEnv,
                              committed_db: psycopg.Connection, specialist: BookableSpecialist) -> None:
    admin = create_person(committed_db, "admin")
    before = footprint(committed_db, functions_env.server)

    assert_error(book(booking_api, admin, specialist.id, specialist.slot()), 403, "FORBIDDEN")
    assert footprint(committed_db, functions_env.server) == before


def test_an_anonymous_sign_in_cannot_book(booking_api: FunctionClient, functions_env: FunctionsEnv,
                                          committed_db: psycopg.Connection, specialist: BookableSpecialist,
                                          client: Person) -> None:
    """Supabase's anonymous users hold real tokens (role authenticated, is_anonymous true)."""
    before = footprint(committed_db, functions_env.server)

    answer = booking_api.post_json({"specialist_id": str(specialist.id), "starts_at": specialist.slot().isoformat()},
                                   headers=bearer(client, is_anonymous=True))

    assert_error(answer, 403, "FORBIDDEN")
    assert footprint(committed_db, functions_env.server) == before


_STRANGER = uuid.uuid4()  # a well-formed user id with no auth.users row and no profile

UNAUTHORIZED_HEADERS = {
    "no Authorization header": lambda client: {},
    "empty Authorization header": lambda client: {"Authorization": ""},
    "Basic scheme": lambda client: {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    "bearer without a token": lambda client: {"Authorization": "Bearer "},
    "not a JWT": lambda client: {"Authorization": "Bearer not-a-jwt"},
    "signed with another secret": lambda client: bearer(client, secret="x" * 64),
    "expired": lambda client: bearer(client, expires_in=-3600),
    "audience not authenticated": lambda client: bearer(client, aud="someone-else"),
    "anon role": lambda client: bearer(client, role="anon"),
    "service role": lambda client: bearer(client, role="service_role"),
    "subject not a uuid": lambda client: bearer(client, sub="alice"),
    "user with no profile": lambda client: bearer(_STRANGER),
    "alg none": lambda client: {"Authorization": "Bearer " + _unsigned(user_token(client))},
}


def _unsigned(token: str) -> str:
    _, payload, _ = token.split(".")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}."


@pytest.mark.parametrize("case", list(UNAUTHORIZED_HEADERS))
def test_a_caller_without_a_valid_token_and_profile_is_unauthorized(
        case: str, booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    before = footprint(committed_db, functions_env.server)

    answer = booking_api.post_json({"specialist_id": str(specialist.id),
                                    "starts_at": specialist.slot().isoformat()},
                                   headers=UNAUTHORIZED_HEADERS[case](client))

    assert_error(answer, 401, "UNAUTHORIZED")
    assert footprint(committed_db, functions_env.server) == before


# -- the specialist -------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["an unknown id", "a client", "an admin", "a specialist without a current rate"])
def test_booking_someone_who_is_not_a_bookable_specialist_is_not_found(
        target: str, booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    if target == "an unknown id":
        target_id = uuid.uuid4()
    elif target == "a client":
        target_id = create_person(committed_db, "client").id
    elif target == "an admin":
        target_id = create_person(committed_db, "admin").id
    else:
        target_id = specialist.id
        committed_db.execute("update public.specialist_rates set effective_to = now() - interval '1 day', "
                             "effective_from = now() - interval '40 days' where specialist_id = %s",
                             [specialist.id])
    before = footprint(committed_db, functions_env.server)

    answer = book(booking_api, client, target_id, specialist.slot())

    assert_error(answer, 404, "NOT_FOUND")
    assert footprint(committed_db, functions_env.server) == before


# -- weekly hours -----------------------------------------------------------------------

# The specialist works 09:00–17:00 on the weekday three days from now, has an inactive
# window the day after, and nothing the day after that. Sessions last 50 minutes.
@pytest.mark.parametrize(("days_ahead", "local_time", "reason"), [
    pytest.param(3, "09:00", None, id="starting at opening time"),
    pytest.param(3, "16:10", None, id="ending at closing time"),
    pytest.param(3, "08:30", "outside_hours", id="starting before opening"),
    pytest.param(3, "16:30", "outside_hours", id="running past closing"),
    pytest.param(3, "17:00", "outside_hours", id="starting at closing"),
    pytest.param(4, "10:00", "outside_hours", id="in an inactive window"),
    pytest.param(5, "10:00", "outside_hours", id="on a day without hours"),
])
def test_slot_must_lie_inside_an_active_weekly_window(
        days_ahead: int, local_time: str, reason: str | None, booking_api: FunctionClient,
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person, bookable_specialist) -> None:
    today = datetime.now(ZoneInfo("Europe/London")).date()
    weekday = lambda days: ((today + timedelta(days=days)).weekday() + 1) % 7  # noqa: E731 (0 = Sunday)
    specialist = bookable_specialist(windows=[Window(weekday(3), "09:00", "17:00"),
                                              Window(weekday(4), "09:00", "17:00", is_active=False)])
    before = footprint(committed_db, functions_env.server)

    answer = book(booking_api, client, specialist.id, specialist.slot(days_ahead, local_time))

    if reason is None:
        assert_booked(answer)
    else:
        assert_error(answer, 409, "SLOT_UNAVAILABLE", reason)
        assert footprint(committed_db, functions_env.server) == before


def _next_dst_change(zone: ZoneInfo, after: date, *, forward: bool) -> date:
    """The first day on which `zone`'s clocks have moved forward (or back), after `after`."""
    day = after
    for _ in range(400):
        today, tomorrow = (datetime.combine(d, clock(12), zone).utcoffset() for d in (day, day + timedelta(days=1)))
        if today != tomorrow and (tomorrow > today) == forward:
            return day + timedelta(days=1)
        day += timedelta(days=1)
    raise AssertionError(f"{zone} has no daylight saving change within 400 days")


# A week apart, across a daylight saving change in New York; hours 09:00–12:00 local, sessions of 60 min.
# `hour`: a wall time that a zone-unaware implementation (one fixed UTC offset) would misplace.
@pytest.mark.parametrize("transport", ["app", "served"])
@pytest.mark.parametrize(("change", "hour"), [("spring forward", 11), ("fall back", 9)])
def test_weekly_hours_follow_the_specialists_clock_across_daylight_saving(
        change: str, hour: int, transport: str, configured_functions_api, committed_db: psycopg.Connection,
        bookable_specialist) -> None:
    api = configured_functions_api(transport, **CONFIGURED).booking_create  # 400 days ahead are bookable
    zone = ZoneInfo("America/New_York")
    specialist = bookable_specialist(timezone="America/New_York", windows=weekly(start="09:00", end="12:00"),
                                     duration_minutes=60)
    changed = _next_dst_change(zone, datetime.now(zone).date() + timedelta(days=10), forward=change == "spring forward")
    before_day, after_day = changed - timedelta(days=6), changed + timedelta(days=1)
    clients = [create_person(committed_db, "client") for _ in range(3)]

    early = assert_booked(book(api, clients[0], specialist.id, specialist.at(before_day, f"{hour:02}:00")))
    late = assert_booked(book(api, clients[1], specialist.id, specialist.at(after_day, f"{hour:02}:00")))
    # The same UTC time of day a week later is an hour off the wall clock: outside the hours.
    same_utc_clock = datetime.fromisoformat(early["starts_at"]) + timedelta(days=7)
    refused = book(api, clients[2], specialist.id, same_utc_clock)

    for body in (early, late):
        local = datetime.fromisoformat(body["starts_at"]).astimezone(zone)
        assert (local.hour, local.minute) == (hour, 0)
    shift = timedelta(hours=1) if change == "spring forward" else timedelta(hours=-1)
    assert datetime.fromisoformat(late["starts_at"]) - datetime.fromisoformat(early["starts_at"]) == (
        timedelta(days=7) - shift)
    assert_error(refused, 409, "SLOT_UNAVAILABLE", "outside_hours")


# -- availability exceptions ----------------------------------------------------------------

# The specialist (New York) works every day 08:00–22:00; the slot is on day D (4 days ahead)
# and lasts 50 minutes. An exception is (day offset from D, is_available, start, end); no
# start/end means all day. 20:30 in New York is already the next day in UTC.
@pytest.mark.parametrize(("exception", "local_time", "reason"), [
    pytest.param((0, False, None, None), "10:00", "exception", id="unavailable all day"),
    pytest.param((0, False, None, None), "20:30", "exception", id="unavailable all day, evening slot"),
    pytest.param((1, False, None, None), "20:30", None, id="unavailable the next day, which is the slot's UTC date"),
    pytest.param((-1, False, None, None), "10:00", None, id="unavailable the day before"),
    pytest.param((0, False, "09:30", "11:00"), "10:00", "exception", id="unavailable for hours overlapping"),
    pytest.param((0, False, "10:45", "12:00"), "10:00", "exception", id="unavailable from before the end"),
    pytest.param((0, False, "10:50", "12:00"), "10:00", None, id="unavailable from the slot's end"),
    pytest.param((0, False, "13:00", "14:00"), "10:00", None, id="unavailable at other hours"),
    pytest.param((0, True, "14:00", "16:00"), "10:00", "outside_hours", id="special hours replace the weekly ones"),
    pytest.param((0, True, "14:00", "16:00"), "14:00", None, id="inside special hours"),
    pytest.param((0, True, "14:00", "16:00"), "15:30", "outside_hours", id="running past special hours"),
    pytest.param((0, True, "22:00", "23:30"), "22:15", None, id="special hours outside the weekly ones"),
])
def test_availability_exceptions_block_or_replace_the_days_hours(
        exception: tuple, local_time: str, reason: str | None, booking_api: FunctionClient,
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person, bookable_specialist) -> None:
    specialist = bookable_specialist(timezone="America/New_York", windows=weekly(start="08:00", end="22:00"))
    day = specialist.local_day(4)
    offset, is_available, start, end = exception
    committed_db.execute(
        """insert into public.specialist_availability_exceptions
             (specialist_id, exception_date, is_available, reason, all_day, start_time, end_time)
           values (%s, %s, %s, 'personal', %s, %s, %s)""",
        [specialist.id, day + timedelta(days=offset), is_available, start is None, start, end],
    )
    before = footprint(committed_db, functions_env.server)

    answer = book(booking_api, client, specialist.id, specialist.at(day, local_time))

    if reason is None:
        assert_booked(answer)
    else:
        assert_error(answer, 409, "SLOT_UNAVAILABLE", reason)
        assert footprint(committed_db, functions_env.server) == before


# -- notice and advance -----------------------------------------------------------------------

@pytest.mark.parametrize(("from_now", "reason"), [
    pytest.param(timedelta(hours=-1), "too_soon", id="in the past"),
    pytest.param(timedelta(minutes=5), "too_soon", id="in five minutes"),
    pytest.param(timedelta(hours=23, minutes=59), "too_soon", id="just under 24 hours ahead"),
    pytest.param(timedelta(days=30, minutes=1), "too_far", id="just over 30 days ahead"),
    pytest.param(timedelta(days=365), "too_far", id="a year ahead"),
])
def test_slot_must_be_24_hours_to_30_days_ahead_by_default(
        from_now: timedelta, reason: str, booking_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, specialist: BookableSpecialist) -> None:
    before = footprint(committed_db, functions_env.server)

    answer = book(booking_api, client, specialist.id, datetime.now(timezone.utc) + from_now)

    assert_error(answer, 409, "SLOT_UNAVAILABLE", reason)
    assert footprint(committed_db, functions_env.server) == before


def _slot_on_the_hour(specialist: BookableSpecialist, *, after: datetime | None = None,
                      before: datetime | None = None) -> datetime:
    """The first (or last) whole hour inside the default 08:00–20:00 hours after (or before) a moment."""
    step = timedelta(hours=1) if after else timedelta(hours=-1)
    moment = (after or before).astimezone(specialist.zone).replace(minute=0, second=0, microsecond=0)
    moment += step if after else timedelta(0)
    while not 8 <= moment.hour <= 18:
        moment += step
    return moment.astimezone(timezone.utc)


@pytest.mark.parametrize("transport", ["app", "served"])
def test_notice_and_advance_limits_are_read_from_the_settings(
        transport: str, configured_functions_api, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist) -> None:
    api = configured_functions_api(transport, **CONFIGURED).booking_create  # 48 hours, 400 days
    now = datetime.now(timezone.utc)
    other_client = create_person(committed_db, "client")

    # Each of these would be answered otherwise under the defaults (24 hours, 30 days).
    assert_error(book(api, client, specialist.id, now + timedelta(hours=47, minutes=59)), 409,
                 "SLOT_UNAVAILABLE", "too_soon")
    assert_error(book(api, client, specialist.id, now + timedelta(days=400, minutes=1)), 409,
                 "SLOT_UNAVAILABLE", "too_far")
    assert_booked(book(api, client, specialist.id,
                       _slot_on_the_hour(specialist, after=now + timedelta(hours=48, minutes=1))))
    assert_booked(book(api, other_client, specialist.id,
                       _slot_on_the_hour(specialist, before=now + timedelta(days=399, hours=23))))


# -- conflicts -------------------------------------------------------------------------------

# The new booking: the client with the specialist, 10:00–10:50 four days ahead. An existing
# session is (whose: "specialist" with another client, or "client" with another specialist;
# start as local time; status).
@pytest.mark.parametrize(("existing", "reason"), [
    pytest.param(("specialist", "10:00", "confirmed"), "taken", id="specialist booked at the same time"),
    pytest.param(("specialist", "10:25", "confirmed"), "taken", id="specialist booked from the middle"),
    pytest.param(("specialist", "09:30", "confirmed"), "taken", id="specialist booked until the middle"),
    pytest.param(("client", "10:00", "confirmed"), "taken", id="client booked with someone else"),
    pytest.param(("client", "10:49", "confirmed"), "taken", id="client booked before the end"),
    pytest.param(("specialist", "09:10", "confirmed"), None, id="specialist booked until the start"),
    pytest.param(("client", "10:50", "confirmed"), None, id="client booked from the end"),
    pytest.param(("specialist", "10:00", "cancelled"), None, id="a cancelled session at the same time"),
])
def test_slot_must_not_overlap_either_partys_confirmed_sessions(
        existing: tuple, reason: str | None, booking_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, specialist: BookableSpecialist,
        bookable_specialist) -> None:
    whose, local_time, status = existing
    day = specialist.local_day(4)
    if whose == "specialist":
        insert_session(committed_db, specialist.id, create_person(committed_db, "client").id,
                       specialist.at(day, local_time), status=status)
    else:
        other = bookable_specialist(full_name="Dr Other")
        insert_session(committed_db, other.id, client.id, specialist.at(day, local_time), status=status)
    before = footprint(committed_db, functions_env.server)

    answer = book(booking_api, client, specialist.id, specialist.at(day, "10:00"))

    if reason is None:
        assert_booked(answer)
    else:
        assert_error(answer, 409, "SLOT_UNAVAILABLE", reason)
        assert footprint(committed_db, functions_env.server) == before


# -- the calendar ------------------------------------------------------------------------------

def test_a_transient_calendar_error_is_retried_and_the_booking_succeeds(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    functions_env.server.fail(503, times=1, method="POST", path_prefix=EVENTS_PATH)

    body = assert_booked(book(booking_api, client, specialist.id, specialist.slot()))

    assert list(functions_env.server.events(specialist.calendar_id)) == [uuid.UUID(body["session_id"]).hex]
    assert [call.status for call in functions_env.server.api_calls("POST")] == [503, 200]


def test_calendar_down_stores_no_session_and_leaves_no_event(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    functions_env.server.fail(500, times=None)
    sessions_before = footprint(committed_db, functions_env.server)["sessions"]

    answer = book(booking_api, client, specialist.id, specialist.slot())

    assert_error(answer, 503, "CALENDAR_UNAVAILABLE")
    assert footprint(committed_db, functions_env.server)["sessions"] == sessions_before
    assert committed_db.execute("select count(*) as n from public.audit_log").fetchone()["n"] == 0
    assert functions_env.server.events(specialist.calendar_id) == {}
    assert len(functions_env.server.api_calls("POST")) == 2  # the first try and one retry


def test_a_calendar_timeout_after_the_event_was_made_deletes_the_orphan_event(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    # Google creates the event, then never answers in time (nor to the retry).
    functions_env.server.fail(hang=3, times=None, method="POST", path_prefix=EVENTS_PATH)

    answer = book(booking_api, client, specialist.id, specialist.slot())

    assert_error(answer, 503, "CALENDAR_UNAVAILABLE")
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 0
    assert functions_env.server.events(specialist.calendar_id) == {}
    (created,) = functions_env.server.deleted_event_ids(specialist.calendar_id)
    assert [call.path.rsplit("/", 1)[1] for call in functions_env.server.api_calls("DELETE")] == [created]
    assert committed_db.execute(
        "select count(*) as n from private.calendar_deletions where completed_at is null").fetchone()["n"] == 0


def test_an_orphan_event_that_cannot_be_deleted_is_queued_and_deleted_later(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    functions_env.server.fail(hang=3, times=None, method="POST", path_prefix=EVENTS_PATH)
    functions_env.server.fail(500, times=2, method="DELETE")  # the delete and its retry

    answer = book(booking_api, client, specialist.id, specialist.slot())

    assert_error(answer, 503, "CALENDAR_UNAVAILABLE")
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 0
    (orphan,) = functions_env.server.events(specialist.calendar_id)
    queued = committed_db.execute("select * from private.calendar_deletions").fetchall()
    assert [(q["event_id"], q["calendar_id"], q["completed_at"]) for q in queued] == [
        (orphan, specialist.calendar_id, None)]
    assert "500" in queued[0]["last_error"]

    retried = calendar_sync.process_due()  # the retry job, once Google is back
    assert (retried["deleted"], retried["failed"]) == (1, 0)
    assert functions_env.server.events(specialist.calendar_id) == {}


# -- bad input -------------------------------------------------------------------------------

VALID = {"specialist_id": "{specialist}", "starts_at": "{starts_at}"}
JSON = {"Content-Type": "application/json"}


def _with(**changes: Any) -> dict:
    return body_with(VALID, **changes)


# (method, body: a dict to fill in and send as JSON, or raw bytes, headers) → (status, code)
BAD_REQUESTS = {
    "specialist_id missing": ("POST", _with(specialist_id=MISSING), JSON, 400, "INVALID_REQUEST"),
    "starts_at missing": ("POST", _with(starts_at=MISSING), JSON, 400, "INVALID_REQUEST"),
    "specialist_id null": ("POST", _with(specialist_id=None), JSON, 400, "INVALID_REQUEST"),
    "empty object": ("POST", {}, JSON, 400, "INVALID_REQUEST"),
    "an extra field": ("POST", _with(price=0), JSON, 400, "INVALID_REQUEST"),
    "a client_id field": ("POST", _with(client_id=str(uuid.uuid4())), JSON, 400, "INVALID_REQUEST"),
    "specialist_id a number": ("POST", _with(specialist_id=42), JSON, 400, "INVALID_REQUEST"),
    "specialist_id not a uuid": ("POST", _with(specialist_id="dr-rosa"), JSON, 400, "INVALID_REQUEST"),
    "specialist_id a list": ("POST", _with(specialist_id=["{specialist}"]), JSON, 400, "INVALID_REQUEST"),
    "starts_at a number": ("POST", _with(starts_at=1796000000), JSON, 400, "INVALID_REQUEST"),
    "starts_at without offset": ("POST", _with(starts_at="{starts_at_naive}"), JSON, 400, "INVALID_REQUEST"),
    "starts_at a date only": ("POST", _with(starts_at="{starts_at_date}"), JSON, 400, "INVALID_REQUEST"),
    "starts_at in words": ("POST", _with(starts_at="next tuesday"), JSON, 400, "INVALID_REQUEST"),
    "starts_at at year 1": ("POST", _with(starts_at="0001-01-01T00:00:00+01:00"), JSON, 400, "INVALID_REQUEST"),
    "starts_at at year 9999": ("POST", _with(starts_at="9999-12-31T23:30:00+00:00"), JSON, 400, "INVALID_REQUEST"),
    "duration a string": ("POST", _with(duration_minutes="50"), JSON, 400, "INVALID_REQUEST"),
    "duration true": ("POST", _with(duration_minutes=True), JSON, 400, "INVALID_REQUEST"),
    "duration too short": ("POST", _with(duration_minutes=5), JSON, 400, "INVALID_REQUEST"),
    "duration fractional": ("POST", _with(duration_minutes=50.5), JSON, 400, "INVALID_REQUEST"),
    "unknown session_type": ("POST", _with(session_type="vip"), JSON, 400, "INVALID_REQUEST"),
    "special_requests a number": ("POST", _with(special_requests=7), JSON, 400, "INVALID_REQUEST"),
    "special_requests too long": ("POST", _with(special_requests="x" * 2001), JSON, 400, "INVALID_REQUEST"),
    "special_requests with NUL": ("POST", _with(special_requests="a\u0000b"), JSON, 400, "INVALID_REQUEST"),
    "a JSON array": ("POST", b'["{specialist}"]', JSON, 400, "INVALID_REQUEST"),
    "JSON null": ("POST", b"null", JSON, 400, "INVALID_REQUEST"),
    "malformed JSON": ("POST", b'{"specialist_id": ', JSON, 400, "INVALID_REQUEST"),
    "not UTF-8": ("POST", b'{"specialist_id": "\xff"}', JSON, 400, "INVALID_REQUEST"),
    "deeply nested JSON": ("POST", b"[" * 20_000 + b"]" * 20_000, JSON, 400, "INVALID_REQUEST"),
    "empty body": ("POST", b"", JSON, 400, "INVALID_REQUEST"),
    "text/plain": ("POST", VALID, {"Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    "a form": ("POST", b"specialist_id=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
               "UNSUPPORTED_MEDIA_TYPE"),
    "no content type": ("POST", VALID, {}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    "a 1 MB body": ("POST", b'{"special_requests": "' + b"x" * 1_000_000 + b'"}', JSON, 413, "PAYLOAD_TOO_LARGE"),
    "GET": ("GET", None, {}, 405, "METHOD_NOT_ALLOWED"),
    "PUT": ("PUT", VALID, JSON, 405, "METHOD_NOT_ALLOWED"),
    "DELETE": ("DELETE", None, {}, 405, "METHOD_NOT_ALLOWED"),
}


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, bytes) and len(value) < 1000:
        return value.replace(b"{specialist}", names["specialist"].encode())
    return value


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_its_error_and_changes_nothing(
        case: str, booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    method, body, headers, status, code = BAD_REQUESTS[case]
    starts_at = specialist.slot()
    names = {"specialist": str(specialist.id), "starts_at": starts_at.isoformat(),
             "starts_at_naive": starts_at.replace(tzinfo=None).isoformat(),
             "starts_at_date": starts_at.date().isoformat()}
    payload = _fill(body, names)
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    before = footprint(committed_db, functions_env.server)

    answer = booking_api.request(method, body=raw, headers={**headers, **bearer(client)})

    assert_error(answer, status, code)
    if status == 405:
        assert answer.header("Allow") == "POST"
    assert footprint(committed_db, functions_env.server) == before


def test_the_valid_request_of_the_bad_input_table_books(booking_api: FunctionClient, client: Person,
                                                         specialist: BookableSpecialist) -> None:
    """The table's baseline: only the named change makes each case fail."""
    payload = _fill(VALID, {"specialist": str(specialist.id), "starts_at": specialist.slot().isoformat()})

    assert_booked(booking_api.request("POST", body=json.dumps(payload), headers={**JSON, **bearer(client)}))


def test_a_1_mb_chunked_body_without_a_length_is_refused(
        served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person) -> None:
    """No Content-Length to refuse it by: the body itself is measured (served process only:
    Werkzeug's test client always sends a length)."""
    before = footprint(committed_db, functions_env.server)

    answer = post_streamed(f"{served_functions.base_url}/booking-create", {**JSON, **bearer(client)},
                           [b'{"special_requests": "', b"x" * 1_000_000, b'"}'])

    assert_error(answer, 413, "PAYLOAD_TOO_LARGE")
    assert footprint(committed_db, functions_env.server) == before


def test_a_cors_preflight_is_answered_without_authentication(booking_api: FunctionClient) -> None:
    answer = booking_api.request("OPTIONS", headers={"Origin": "https://app.example.test",
                                                     "Access-Control-Request-Method": "POST"})

    assert answer.status == 204
    assert "POST" in answer.header("Access-Control-Allow-Methods")
    assert "authorization" in answer.header("Access-Control-Allow-Headers")


# -- concurrency (the served process) ------------------------------------------------------------

def _race(calls: list, timeout: float = 60) -> list[Answer]:
    """Runs every call at once (a barrier releases them together); returns the answers in order."""
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
        thread.join(timeout)
    assert all(isinstance(a, Answer) for a in answers), [a for a in answers if not isinstance(a, Answer)]
    return answers


def _codes(answers: list[Answer]) -> list[tuple[int, str | None]]:
    return sorted((a.status, a.json().get("details", {}).get("reason")) for a in answers)


def test_fifty_clients_racing_for_one_slot_get_exactly_one_session_and_one_event(
        served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist) -> None:
    api = ServedClient(served_functions.base_url, "booking-create")
    clients = [create_person(committed_db, "client") for _ in range(50)]
    starts_at = specialist.slot()

    answers = _race([lambda c=c: book(api, c, specialist.id, starts_at) for c in clients])

    assert _codes(answers) == [(200, None)] + [(409, "taken")] * 49
    sessions = committed_db.execute("select id, client_id from public.sessions").fetchall()
    (winner,) = [a.json() for a in answers if a.status == 200]
    assert [s["id"] for s in sessions] == [uuid.UUID(winner["session_id"])]
    assert list(functions_env.server.events(specialist.calendar_id)) == [sessions[0]["id"].hex]
    assert len(functions_env.server.api_calls("POST")) == 1


def test_one_client_racing_to_book_fifty_specialists_at_once_gets_one_session(
        served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        bookable_specialist) -> None:
    api = ServedClient(served_functions.base_url, "booking-create")
    specialists = [bookable_specialist(full_name=f"Dr {i}", windows=weekly(start="09:00", end="12:00"))
                   for i in range(50)]
    starts_at = specialists[0].slot()

    answers = _race([lambda s=s: book(api, client, s.id, starts_at) for s in specialists])

    assert _codes(answers) == [(200, None)] + [(409, "taken")] * 49
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 1
    assert len(functions_env.server.events("primary")) == 1


# -- the benchmark ---------------------------------------------------------------------------------

def test_the_booking_benchmark_seeds_and_books_in_its_small_mode() -> None:
    """`python -m tests.bench.booking_create --small` end to end: its own cluster, calendar and server."""
    run = subprocess.run([sys.executable, "-m", "tests.bench.booking_create", "--small", "--bookings", "48"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "seeded 4 specialists, 64 clients, 4 rates, 28 weekly windows" in run.stdout, run.stdout
    assert re.search(r"^bookings: 48 succeeded, 0 failed$", run.stdout, re.M), run.stdout
    # 48 measured and one warm-up booking per specialist, each with its event.
    assert re.search(r"^checked: 52 confirmed sessions, 52 calendar events$", run.stdout, re.M), run.stdout
    assert re.search(r"^throughput: [\d.]+ bookings/s", run.stdout, re.M), run.stdout
