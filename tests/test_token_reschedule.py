""""Reschedule" on the emailed link's page (token-cancel), through functions-framework's app
and the served process: opening the link lists the free times of the coming days (the
database's free slots for the session's length, its own slot ignored) and changes nothing;
only the page's form POST moves the session, in the client's name, under the same rules
as booking-reschedule. Any link ever sent opens the session as it is now.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shared.links import cancellation_url
from tests.functions_fixtures import (
    Answer, BookableSpecialist, FunctionClient, FunctionsApi, FunctionsEnv, Window, bearer,
)
from tests.support import Person, create_person

CALENDAR_ID = "rosa.lind@clinic.test"
MOVE_REASON = "Moved by the client through the emailed link"
TOKYO = ZoneInfo("Asia/Tokyo")
SLOT = re.compile(r'<input type="radio" name="starts_at" value="([^"]+)" required> ([^<]+)</label>')
DAY = re.compile(r"<summary>([^<]+)</summary>")


@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    # The page speaks the reader's (the client's) time, not the specialist's.
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Asia/Tokyo")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", calendar_id=CALENDAR_ID)


@pytest.fixture
def book(booked_session, specialist: BookableSpecialist, client: Person):
    def make(days_ahead: int = 5, local_time: str = "10:00", *, who: Person | None = None) -> dict:
        starts_at = specialist.slot(days_ahead=days_ahead, local_time=local_time)
        return booked_session(specialist, who or client, starts_in=starts_at - datetime.now(timezone.utc),
                              calendar_synced_at=datetime.now(timezone.utc))
    return make


def link(session_id: uuid.UUID) -> str:
    return urlsplit(cancellation_url(session_id)).query


def token_of(query: str) -> str:
    return parse_qs(query)["token"][0]


def choose(api: FunctionClient, query: str, starts_at: str | datetime | None) -> Answer:
    """What the page's move form sends: the token, the action and the chosen start."""
    form = {"token": token_of(query), "action": "reschedule"}
    if starts_at is not None:
        form["starts_at"] = starts_at.isoformat() if isinstance(starts_at, datetime) else starts_at
    return api.post_form(form, query=query)


def title(answer: Answer) -> str:
    match = re.search(r"<h1>(.*?)</h1>", answer.text, re.S)
    assert match, answer.text
    return html.unescape(match.group(1))


def offered(answer: Answer) -> list[tuple[datetime, str]]:
    return [(datetime.fromisoformat(html.unescape(value)), html.unescape(label))
            for value, label in SLOT.findall(answer.text)]


def facts(answer: Answer) -> dict[str, str]:
    pairs = re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", answer.text)
    return {html.unescape(k): html.unescape(v) for k, v in pairs}


def footprint(conn: psycopg.Connection, server) -> dict:
    return {
        "sessions": conn.execute("select id, starts_at, ends_at, status from public.sessions order by id").fetchall(),
        **conn.execute("""select (select count(*) from public.audit_log) as audit_log,
                                 (select count(*) from public.booking_cancellations) as cancellations,
                                 (select count(*) from private.calendar_patches) as patches,
                                 (select count(*) from private.email_outbox) as emails""").fetchone(),
        "calendar_requests": len(server.requests),
    }


def shown_time(starts_at: datetime, minutes: int = 50) -> str:
    local = starts_at.astimezone(TOKYO)
    return f"{local:%H:%M}–{(local + timedelta(minutes=minutes)):%H:%M}"


# -- opening the link --------------------------------------------------------------------------

def test_opening_the_link_lists_the_free_times_and_changes_nothing(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    book(6, "08:50", who=create_person(committed_db, "client"))  # someone else's session
    before = footprint(committed_db, functions_env.server)

    answer = token_cancel_api.request("GET", query=link(session["id"]))

    assert (answer.status, title(answer)) == (200, "Cancel this session?")
    assert footprint(committed_db, functions_env.server) == before, "opening the link changes nothing"
    slots = offered(answer)
    starts = {start for start, _ in slots}
    assert all(label == shown_time(start) for start, label in slots), "50 minutes each, in the client's time"
    assert session["starts_at"] not in starts, "not its current time"
    # The grid of a day 08:00–20:00 with 50-minute sessions: 08:00, 08:50, 09:40, 10:30, …
    assert specialist.slot(5, "09:40") in starts, "a time overlapping the session's own slot is free for it"
    assert specialist.slot(6, "08:00") in starts and specialist.slot(6, "09:40") in starts
    assert specialist.slot(6, "08:50") not in starts, "someone else's session"
    assert min(starts) >= datetime.now(timezone.utc) + timedelta(hours=24), "the booking notice holds"
    assert max(starts) < datetime.now(timezone.utc) + timedelta(days=15)
    days = DAY.findall(answer.text)
    assert days == sorted(set(days), key=days.index) and 12 <= len(days) <= 14, days
    first = specialist.slot(6, "08:00").astimezone(TOKYO)
    assert f"{first:%A} {first.day} {first:%B}" in days, "days are the client's"
    # The cancel form stays first on the page; the move form comes after it.
    assert answer.text.index("Yes, cancel this session") < answer.text.index("Move my session to this time")


def test_with_no_free_time_the_page_says_so(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    # The specialist no longer offers 50 minutes: nothing of the session's length is free.
    committed_db.execute("update public.specialist_rates set duration_minutes = 60 where specialist_id = %s",
                         [specialist.id])

    answer = token_cancel_api.request("GET", query=link(session["id"]))

    assert (answer.status, title(answer)) == (200, "Cancel this session?")
    assert offered(answer) == []
    assert "No other time is free in the next 14 days" in answer.text


# -- moving from the page -------------------------------------------------------------------------

def test_choosing_a_time_moves_the_session_in_the_clients_name(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    query = link(session["id"])
    chosen, label = offered(token_cancel_api.request("GET", query=query))[7]

    answer = choose(token_cancel_api, query, chosen)

    assert (answer.status, title(answer)) == (200, "Your session has moved")
    local = chosen.astimezone(TOKYO)
    assert facts(answer) == {"Date": f"{local:%A} {local.day} {local:%B %Y}", "Time": f"{label} (Asia/Tokyo)",
                             "With": "Dr Rosa Lind"}
    old = session["starts_at"].astimezone(TOKYO)
    assert f"It was on {old:%A} {old.day} {old:%B %Y} at {shown_time(session['starts_at'])} (Asia/Tokyo)" in \
        html.unescape(answer.text)
    row = committed_db.execute("select id, starts_at, ends_at, status, booking_reference from public.sessions"
                               ).fetchone()
    assert (row["id"], row["starts_at"], row["ends_at"], row["status"], row["booking_reference"]) == (
        session["id"], chosen, chosen + timedelta(minutes=50), "confirmed", session["booking_reference"])
    audit = committed_db.execute("select actor_id, actor_role, new_values from public.audit_log").fetchall()
    assert [(a["actor_id"], a["actor_role"], a["new_values"]["reason"], a["new_values"]["channel"]) for a in audit] \
        == [(client.id, "client", MOVE_REASON, "token-cancel")]
    event = functions_env.server.events(CALENDAR_ID)[session["id"].hex]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == chosen


def test_a_link_sent_before_two_moves_opens_the_session_as_it_is_now_and_cancels_it(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    sent_first = link(session["id"])  # in the confirmation email, before any move
    first, second = specialist.slot(7, "13:00"), specialist.slot(8, "15:00")
    assert functions_api.booking_reschedule.post_json(
        {"booking_id": str(session["id"]), "starts_at": first.isoformat()},
        headers=bearer(specialist.person)).status == 200
    assert choose(functions_api.token_cancel, sent_first, second).status == 200

    opened = functions_api.token_cancel.request("GET", query=sent_first)

    assert (opened.status, title(opened)) == (200, "Cancel this session?")
    local = second.astimezone(TOKYO)
    assert facts(opened)["Date"] == f"{local:%A} {local.day} {local:%B %Y}"
    assert facts(opened)["Time"] == f"{shown_time(second)} (Asia/Tokyo)"

    cancelled = functions_api.token_cancel.post_form({"token": token_of(sent_first)}, query=sent_first)

    assert (cancelled.status, title(cancelled)) == (200, "Your session is cancelled")
    row = committed_db.execute("select status, starts_at, cancelled_by from public.sessions").fetchone()
    assert (row["status"], row["starts_at"], row["cancelled_by"]) == ("cancelled", second, client.id)
    assert functions_env.server.events(CALENDAR_ID) == {}
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 1, "no second session"


BAD_CHOICES = {
    "no time chosen": None,
    "not a time": "next tuesday",
    "a time without an offset": "2030-01-01T10:00:00",
}


@pytest.mark.parametrize("case", list(BAD_CHOICES))
def test_a_missing_or_unreadable_choice_asks_again_and_changes_nothing(
        case: str, token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book) -> None:
    session = book(5, "10:00")
    before = footprint(committed_db, functions_env.server)

    answer = choose(token_cancel_api, link(session["id"]), BAD_CHOICES[case])

    assert (answer.status, title(answer)) == (400, "Choose a new time")
    assert "Please choose one of the free times below. Your session has not been changed." in answer.text
    assert offered(answer), "the free times again"
    assert footprint(committed_db, functions_env.server) == before


def test_a_time_taken_meanwhile_is_refused_with_the_free_times_now(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    query = link(session["id"])
    chosen, _ = offered(token_cancel_api.request("GET", query=query))[3]
    # Someone books it while the page is open.
    committed_db.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at) values (%s, %s, %s, %s)",
        [specialist.id, create_person(committed_db, "client").id, chosen, chosen + timedelta(minutes=50)])
    before = footprint(committed_db, functions_env.server)

    answer = choose(token_cancel_api, query, chosen)

    assert (answer.status, title(answer)) == (409, "This time is not free")
    assert "The specialist already has a session at that time. Your session has not been changed." in answer.text
    assert chosen not in {start for start, _ in offered(answer)}
    assert footprint(committed_db, functions_env.server) == before


def test_the_same_time_again_is_refused(token_cancel_api: FunctionClient, functions_env: FunctionsEnv,
                                        committed_db: psycopg.Connection, book) -> None:
    session = book(5, "10:00")
    before = footprint(committed_db, functions_env.server)

    answer = choose(token_cancel_api, link(session["id"]), session["starts_at"])

    assert (answer.status, title(answer)) == (400, "Choose a new time")
    assert "Your session already starts at that time" in answer.text
    assert footprint(committed_db, functions_env.server) == before


@pytest.mark.parametrize("transport", ["app", "served"])
def test_inside_the_notice_the_link_neither_offers_nor_makes_a_move(
        transport: str, configured_functions_api, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, booked_session, client: Person) -> None:
    api = configured_functions_api(transport, CANCELLATION_MIN_NOTICE_HOURS="48").token_cancel
    soon = booked_session(specialist, client, starts_in=timedelta(hours=30))
    query = link(soon["id"])
    before = footprint(committed_db, functions_env.server)

    opened = api.request("GET", query=query)
    moved = choose(api, query, specialist.slot(7, "10:00"))

    assert (opened.status, title(opened)) == (409, "It is too late to cancel this session online")
    assert offered(opened) == []
    assert (moved.status, title(moved)) == (409, "It is too late to move this session online")
    assert "Sessions must be moved at least 48 hours ahead; please contact your specialist." in moved.text
    assert footprint(committed_db, functions_env.server) == before


def test_a_cancelled_or_altered_link_moves_nothing(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    query = link(session["id"])
    assert token_cancel_api.post_form({"token": token_of(query)}, query=query).status == 200
    before = footprint(committed_db, functions_env.server)

    cancelled = choose(token_cancel_api, query, specialist.slot(7, "10:00"))
    altered = token_cancel_api.post_form({"token": token_of(query)[:-2] + "xx", "action": "reschedule",
                                          "starts_at": specialist.slot(7, "10:00").isoformat()})

    assert (cancelled.status, title(cancelled)) == (409, "This session was already cancelled")
    assert (altered.status, title(altered)) == (404, "This cancellation link is not valid")
    assert footprint(committed_db, functions_env.server) == before
    assert committed_db.execute("select count(*) as n from private.cancel_link_failures").fetchone()["n"] == 1


def test_with_more_free_times_than_one_read_holds_the_page_offers_fewer_days(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        bookable_specialist, booked_session, client: Person) -> None:
    """15-minute sessions around the clock: 96 a day, more than free_slots' 1,000 in 14 days."""
    busy = bookable_specialist(full_name="Dr Always", duration_minutes=15,
                               windows=[w for day in range(7) for w in (Window(day, "00:00", "23:59"),)])
    starts_at = busy.slot(days_ahead=3, local_time="10:00")
    session = booked_session(busy, client, starts_in=starts_at - datetime.now(timezone.utc), minutes=15)

    answer = token_cancel_api.request("GET", query=link(session["id"]))

    assert (answer.status, title(answer)) == (200, "Cancel this session?")
    starts = [start for start, _ in offered(answer)]
    assert 400 < len(starts) <= 1000, len(starts)  # today and tomorrow are mostly inside the notice
    assert max(starts) < datetime.now(timezone.utc) + timedelta(days=8), "a week, not two"


@pytest.mark.parametrize("action", ["delete", "RESCHEDULE", "cancel "])
def test_an_unknown_action_changes_nothing(action: str, token_cancel_api: FunctionClient,
                                           functions_env: FunctionsEnv, committed_db: psycopg.Connection,
                                           specialist: BookableSpecialist, book) -> None:
    session = book(5, "10:00")
    query = link(session["id"])
    before = footprint(committed_db, functions_env.server)

    answer = token_cancel_api.post_form({"token": token_of(query), "action": action,
                                         "starts_at": specialist.slot(7, "10:00").isoformat()}, query=query)

    assert (answer.status, title(answer)) == (400, "This page cannot do that")
    assert footprint(committed_db, functions_env.server) == before


def test_the_cancel_forms_explicit_action_cancels(token_cancel_api: FunctionClient, committed_db: psycopg.Connection,
                                                  book) -> None:
    session = book(5, "10:00")
    query = link(session["id"])

    answer = token_cancel_api.post_form({"token": token_of(query), "action": "cancel"}, query=query)

    assert (answer.status, title(answer)) == (200, "Your session is cancelled")
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "cancelled"
