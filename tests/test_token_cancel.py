"""token-cancel through its HTTP interface (functions-framework's app and the served
process): opening the emailed link only shows the session; the page's button cancels.
Every outcome has its own page and status, everything shown is escaped, and guessing
links from one address is refused for a while.
"""

from __future__ import annotations

import html
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shared.links import cancellation_url
from tests.functions_fixtures import (
    Answer, BookableSpecialist, FunctionClient, FunctionsApi, FunctionsEnv, ServedClient, bearer,
    fetch,
)
from tests.support import Person, create_person

TITLES = {
    "confirm": "Cancel this session?",
    "cancelled": "Your session is cancelled",
    "already cancelled": "This session was already cancelled",
    "past": "This session can no longer be cancelled",
    "invalid": "This cancellation link is not valid",
    "too many attempts": "Too many attempts",
    "method not allowed": "This page cannot do that",
    "too late": "It is too late to cancel this session online",
}
LINK_REASON = "Cancelled by the client through the emailed link"
ROTATED_SECRET = "the-next-cancellation-link-secret-after-rotation-0123456789"


# -- helpers --------------------------------------------------------------------------

@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    # The page speaks the reader's (the client's) time, not the specialist's.
    return create_person(committed_db, "client", full_name="Alice Client", timezone="Asia/Tokyo")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", calendar_id="rosa.lind@clinic.test")


@pytest.fixture
def book_session(committed_db: psycopg.Connection, functions_env: FunctionsEnv, client: Person,
                 specialist: BookableSpecialist):
    """Inserts a confirmed session (as the superuser) with its event on the calendar server."""
    def make(starts_at: datetime | None = None, minutes: int = 50, *,
             with_specialist: BookableSpecialist | None = None) -> dict:
        chosen = with_specialist or specialist
        starts_at = starts_at or chosen.slot(days_ahead=5, local_time="10:00")
        session_id = uuid.uuid4()
        row = committed_db.execute(
            """insert into public.sessions (id, specialist_id, client_id, starts_at, ends_at, google_calendar_event_id)
               values (%s, %s, %s, %s, %s, %s) returning *""",
            [session_id, chosen.id, client.id, starts_at, starts_at + timedelta(minutes=minutes), session_id.hex],
        ).fetchone()
        functions_env.server.put_event(chosen.calendar_id, {
            "id": session_id.hex, "start": {"dateTime": starts_at.isoformat()},
            "end": {"dateTime": row["ends_at"].isoformat()}})
        return row
    return make


def link(session_id: uuid.UUID) -> str:
    """The query string of the session's cancellation link, as made in this process."""
    return urlsplit(cancellation_url(session_id)).query


def token_of(query: str) -> str:
    return parse_qs(query)["token"][0]


def press_the_button(api: FunctionClient, query: str, address: str | None = None) -> Answer:
    """What the confirm page's form sends: a POST to the same URL with the hidden token."""
    return api.post_form({"token": token_of(query)}, query=query, address=address)


def title(answer: Answer) -> str:
    match = re.search(r"<h1>(.*?)</h1>", answer.text, re.S)
    assert match, answer.text
    return html.unescape(match.group(1))


def page_text(answer: Answer) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", answer.text))


def assert_page(answer: Answer, status: int, kind: str) -> None:
    assert (answer.status, title(answer)) == (status, TITLES[kind])
    assert answer.header("Content-Type") == "text/html; charset=utf-8"


def footprint(conn: psycopg.Connection, server) -> dict:
    counts = conn.execute(
        """select (select count(*) from public.sessions where status = 'confirmed') as confirmed,
                  (select count(*) from public.booking_cancellations) as cancellations,
                  (select count(*) from public.booking_status_history) as history,
                  (select count(*) from public.audit_log) as audit_log,
                  (select count(*) from private.calendar_deletions) as calendar_deletions"""
    ).fetchone()
    return {**counts, "calendar_requests": len(server.requests)}


def assert_cancelled_by_the_link(conn: psycopg.Connection, server, session_id: uuid.UUID, client: Person,
                                 calendar_id: str) -> None:
    session = conn.execute("select * from public.sessions where id = %s", [session_id]).fetchone()
    assert (session["status"], session["cancelled_by"]) == ("cancelled", client.id)
    cancellations = conn.execute("select booking_id, cancelled_by, reason from public.booking_cancellations"
                                 ).fetchall()
    assert cancellations == [{"booking_id": session_id, "cancelled_by": client.id, "reason": LINK_REASON}]
    history = conn.execute(
        """select from_status, to_status, changed_by, reason from public.booking_status_history
           where session_id = %s and to_status = 'cancelled'""", [session_id]).fetchall()
    assert history == [{"from_status": "confirmed", "to_status": "cancelled", "changed_by": client.id,
                        "reason": LINK_REASON}]
    audit = conn.execute(
        """select actor_id, actor_role, new_values ->> 'channel' as channel, status from public.audit_log
           where entity_id = %s and action = 'session_cancelled'""", [session_id]).fetchall()
    assert audit == [{"actor_id": client.id, "actor_role": "client", "channel": "token-cancel", "status": "success"}]
    deletes = server.api_calls("DELETE")
    assert [call.path for call in deletes] == [
        f"/calendar/v3/calendars/{calendar_id.replace('@', '%40')}/events/{session_id.hex}"]
    assert session_id.hex not in server.events(calendar_id)
    queued = conn.execute("select completed_at from private.calendar_deletions where session_id = %s",
                          [session_id]).fetchone()
    assert queued["completed_at"] is not None


# -- opening the link ---------------------------------------------------------------------

def test_opening_the_link_shows_the_session_and_changes_nothing(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book_session) -> None:
    session = book_session()
    before = footprint(committed_db, functions_env.server)

    answer = token_cancel_api.request("GET", query=link(session["id"]))

    assert_page(answer, 200, "confirm")
    start = session["starts_at"].astimezone(ZoneInfo("Asia/Tokyo"))
    end = session["ends_at"].astimezone(ZoneInfo("Asia/Tokyo"))
    text = page_text(answer)
    for shown in (start.strftime("%A"), start.strftime("%B"), str(start.year), "Dr Rosa Lind",
                  f"{start:%H:%M}–{end:%H:%M}", "Asia/Tokyo"):
        assert shown in text
    assert re.search(r'<form method="post">.*<button type="submit">Yes, cancel this session</button>', answer.text,
                     re.S)
    assert f'name="token" value="{token_of(link(session["id"]))}"' in answer.text
    assert footprint(committed_db, functions_env.server) == before
    assert functions_env.server.requests == []


def test_opening_the_link_many_times_still_changes_nothing(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book_session) -> None:
    """Mail scanners and link previews open links, sometimes repeatedly."""
    session = book_session()
    before = footprint(committed_db, functions_env.server)

    statuses = [token_cancel_api.request("GET", query=link(session["id"])).status for _ in range(12)]

    assert statuses == [200] * 12  # valid links never count towards the attempt limit
    assert footprint(committed_db, functions_env.server) == before


# -- seed 000 scenarios ----------------------------------------------------------------------

def _open(api: FunctionsApi, cancel_url: str, method: str = "GET") -> Answer:
    """Opens a cancel_url as emailed (served: the very URL; app: its query), or sends its page's form."""
    query = api.link(cancel_url)
    if method == "POST":
        form = {"body": urlencode({"token": token_of(query)}),
                "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    else:
        form = {}
    if api.transport == "served":
        return fetch(cancel_url, method, **form)
    return api.token_cancel.request(method, query=query, **form)


def _book(api: FunctionsApi, client: Person, specialist: BookableSpecialist) -> dict:
    answer = api.booking_create.post_json(
        {"specialist_id": str(specialist.id), "starts_at": specialist.slot(days_ahead=5).isoformat()},
        headers=bearer(client))
    assert answer.status == 200, answer.text
    return answer.json()


def test_client_cancels_via_cancellation_link(functions_api: FunctionsApi, functions_env: FunctionsEnv,
                                              committed_db: psycopg.Connection, client: Person,
                                              specialist: BookableSpecialist) -> None:
    booked = _book(functions_api, client, specialist)
    session_id = uuid.UUID(booked["session_id"])

    shown = _open(functions_api, booked["cancel_url"])
    assert_page(shown, 200, "confirm")
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "confirmed"
    assert functions_env.server.api_calls("DELETE") == []

    done = _open(functions_api, booked["cancel_url"], "POST")

    assert_page(done, 200, "cancelled")
    assert "Dr Rosa Lind" in page_text(done)
    assert_cancelled_by_the_link(committed_db, functions_env.server, session_id, client, specialist.calendar_id)


def test_the_cancelled_page_mentions_the_calendar_only_for_a_session_that_had_an_event(
        token_cancel_api: FunctionClient, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, book_session) -> None:
    with_event = book_session()
    without_event = book_session(specialist.slot(days_ahead=6, local_time="10:00"))
    committed_db.execute("update public.sessions set google_calendar_event_id = null where id = %s",
                         [without_event["id"]])

    synced = press_the_button(token_cancel_api, link(with_event["id"]))
    unsynced = press_the_button(token_cancel_api, link(without_event["id"]))

    assert_page(synced, 200, "cancelled")
    assert_page(unsynced, 200, "cancelled")
    assert "removed from your specialist's calendar" in page_text(synced)
    assert "calendar" not in page_text(unsynced)


INVALID_LINKS = {
    "garbage token": lambda valid: "token=not-a-real-token",
    # A middle character: the last one of a base64 signature partly holds padding bits,
    # so changing it may decode to the very same bytes.
    "tampered signature": lambda valid: urlencode({"token": token_of(valid)[:-5] + (
        "A" if token_of(valid)[-5] != "A" else "B") + token_of(valid)[-4:]}),
    "tampered session id": lambda valid: urlencode({"token": "X" + token_of(valid)[1:]}),
    "signed link for no session": lambda valid: link(uuid.uuid4()),
    "empty token": lambda valid: "token=",
    "no token": lambda valid: "",
    "overlong token": lambda valid: urlencode({"token": token_of(valid) * 5}),
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case", list(INVALID_LINKS))
def test_client_uses_an_invalid_cancellation_token(
        case: str, method: str, token_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, book_session) -> None:
    session = book_session()
    query = INVALID_LINKS[case](link(session["id"]))
    before = footprint(committed_db, functions_env.server)

    if method == "POST":
        sent = parse_qs(query).get("token")
        answer = token_cancel_api.post_form({"token": sent[0]} if sent else {}, query=query)
    else:
        answer = token_cancel_api.request("GET", query=query)

    assert_page(answer, 404, "invalid")
    assert "Dr Rosa Lind" not in answer.text
    assert footprint(committed_db, functions_env.server) == before


def test_client_attempts_to_cancel_an_already_cancelled_session(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist) -> None:
    booked = _book(functions_api, client, specialist)
    assert_page(_open(functions_api, booked["cancel_url"], "POST"), 200, "cancelled")
    before = footprint(committed_db, functions_env.server)

    opened_again = _open(functions_api, booked["cancel_url"])
    pressed_again = _open(functions_api, booked["cancel_url"], "POST")

    assert_page(opened_again, 409, "already cancelled")
    assert_page(pressed_again, 409, "already cancelled")
    assert "Dr Rosa Lind" in page_text(opened_again)
    assert "<form" not in opened_again.text
    assert footprint(committed_db, functions_env.server) == before
    assert len(functions_env.server.api_calls("DELETE")) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(("starts", "minutes"), [
    pytest.param(timedelta(minutes=-10), 50, id="started ten minutes ago"),
    pytest.param(timedelta(days=-3), 50, id="over three days ago"),
    pytest.param(timedelta(seconds=-1), 50, id="started a second ago"),
])
def test_a_session_that_has_started_or_is_over_cannot_be_cancelled(
        starts: timedelta, minutes: int, method: str, token_cancel_api: FunctionClient,
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, book_session) -> None:
    session = book_session(datetime.now(timezone.utc) + starts, minutes)
    before = footprint(committed_db, functions_env.server)

    if method == "POST":
        answer = press_the_button(token_cancel_api, link(session["id"]))
    else:
        answer = token_cancel_api.request("GET", query=link(session["id"]))

    assert_page(answer, 409, "past")
    assert "<form" not in answer.text
    assert footprint(committed_db, functions_env.server) == before


# -- the client's minimum cancellation notice (the database's rule, sql/0019) --------------------

@pytest.mark.parametrize("transport", ["app", "served"])
def test_inside_the_cancellation_notice_the_link_says_too_late_and_changes_nothing(
        transport: str, configured_functions_api, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book_session) -> None:
    api = configured_functions_api(transport, CANCELLATION_MIN_NOTICE_HOURS="24").token_cancel
    soon = book_session(datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=3))
    before = footprint(committed_db, functions_env.server)

    opened = api.request("GET", query=link(soon["id"]))
    pressed = press_the_button(api, link(soon["id"]))

    for answer in (opened, pressed):
        assert_page(answer, 409, "too late")
        assert "<form" not in answer.text
        assert "Sessions must be cancelled at least 24 hours ahead; please contact your specialist." in \
            page_text(answer)
    assert footprint(committed_db, functions_env.server) == before
    # Outside the notice the same link still cancels.
    later = book_session(datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=30))
    assert_page(api.request("GET", query=link(later["id"])), 200, "confirm")
    assert_page(press_the_button(api, link(later["id"])), 200, "cancelled")


# -- what the pages show and send ---------------------------------------------------------------

def _page(kind: str, api: FunctionClient, book_session) -> Answer:
    """Brings about the page of `kind` and returns it."""
    if kind == "past":
        return api.request("GET", query=link(book_session(datetime.now(timezone.utc) - timedelta(minutes=5))["id"]))
    if kind == "invalid":
        return api.request("GET", query="token=nothing-valid")
    if kind == "too many attempts":
        for _ in range(10):
            api.request("GET", query="token=guess", address="192.0.2.10")
        return api.request("GET", query="token=guess", address="192.0.2.10")
    if kind == "method not allowed":
        return api.request("PUT", query=link(book_session()["id"]))
    query = link(book_session()["id"])
    if kind == "confirm":
        return api.request("GET", query=query)
    first = press_the_button(api, query)
    return first if kind == "cancelled" else api.request("GET", query=query)


PAGE_STATUS = {"confirm": 200, "cancelled": 200, "already cancelled": 409, "past": 409, "invalid": 404,
               "too many attempts": 429, "method not allowed": 405}


@pytest.mark.parametrize("kind", ["confirm", "cancelled", "already cancelled", "past"])
def test_everything_shown_is_html_escaped(kind: str, token_cancel_api: FunctionClient, bookable_specialist,
                                          book_session) -> None:
    hostile = bookable_specialist(full_name="<script>alert(1)</script>")
    with_hostile = lambda starts_at=None, minutes=50: book_session(starts_at, minutes, with_specialist=hostile)  # noqa: E731

    answer = _page(kind, token_cancel_api, with_hostile)

    assert_page(answer, PAGE_STATUS[kind], kind)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    assert "<script" not in answer.text


@pytest.mark.parametrize("kind", list(PAGE_STATUS))
def test_every_page_has_its_status_and_the_security_headers(kind: str, token_cancel_api: FunctionClient,
                                                            book_session) -> None:
    answer = _page(kind, token_cancel_api, book_session)

    assert_page(answer, PAGE_STATUS[kind], kind)
    csp = answer.header("Content-Security-Policy")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
    assert "script-src" not in csp  # no scripts at all
    assert answer.header("Referrer-Policy") == "no-referrer"
    assert answer.header("Cache-Control") == "no-store"
    assert answer.header("X-Content-Type-Options") == "nosniff"
    assert answer.header("X-Robots-Tag") == "noindex, nofollow"
    if kind == "method not allowed":
        assert answer.header("Allow") == "GET, POST"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_refused_and_change_nothing(
        method: str, token_cancel_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, book_session) -> None:
    session = book_session()
    query = link(session["id"])
    before = footprint(committed_db, functions_env.server)

    answer = token_cancel_api.request(method, query=query, body=urlencode({"token": token_of(query)}),
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})

    assert_page(answer, 405, "method not allowed")
    assert answer.header("Allow") == "GET, POST"
    assert footprint(committed_db, functions_env.server) == before


# -- guessing and rotation ------------------------------------------------------------------------

def test_repeated_wrong_links_from_one_address_are_refused_for_fifteen_minutes(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book_session) -> None:
    guesser, bystander = "203.0.113.7", "198.51.100.9"
    valid = link(book_session()["id"])

    guesses = [token_cancel_api.request("GET", query=f"token=guess-{n}", address=guesser).status for n in range(10)]
    refused = token_cancel_api.request("GET", query="token=guess-10", address=guesser)
    refused_press = token_cancel_api.post_form({"token": "guess-11"}, address=guesser)
    unaffected = token_cancel_api.request("GET", query="token=guess-0", address=bystander)

    assert guesses == [404] * 10
    assert_page(refused, 429, "too many attempts")
    assert_page(refused_press, 429, "too many attempts")
    assert_page(unaffected, 404, "invalid")
    assert committed_db.execute("select count(*) as n from private.cancel_link_failures").fetchone()["n"] == 11, \
        "refusals past the limit are not stored again"

    # Failures older than the window no longer count.
    committed_db.execute("update private.cancel_link_failures set failed_at = failed_at - interval '15 minutes 1 second'")
    assert_page(token_cancel_api.request("GET", query="token=guess-12", address=guesser), 404, "invalid")
    assert_page(token_cancel_api.request("GET", query=valid, address=guesser), 200, "confirm")


def test_a_validly_signed_link_is_honoured_however_many_wrong_links_its_address_sent(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, book_session) -> None:
    """One office or mobile network shares an address: others' bad links never lock a client out."""
    shared_address = "203.0.113.70"
    session = book_session()
    valid = link(session["id"])
    for n in range(12):
        token_cancel_api.request("GET", query=f"token=guess-{n}", address=shared_address)

    opened = token_cancel_api.request("GET", query=valid, address=shared_address)
    pressed = press_the_button(token_cancel_api, valid, address=shared_address)

    assert_page(opened, 200, "confirm")
    assert_page(pressed, 200, "cancelled")
    assert_cancelled_by_the_link(committed_db, functions_env.server, session["id"], client, specialist.calendar_id)


@pytest.mark.parametrize("addresses, limited", [
    ([f"2001:db8:1:2::{n:x}" for n in range(11)], True),  # rotating inside one /64
    ([f"2001:db8:1:2:{n:x}::1" for n in range(11)], True),
    ([f"2001:db8:1:{n:x}::1" for n in range(11)], False),  # eleven different /64s
    ([f"::ffff:192.0.2.{n}" for n in range(11)], False),  # IPv4-mapped: counted as the IPv4 address
], ids=["same /64, host part rotated", "same /64, interface id rotated", "different /64s", "ipv4-mapped"])
def test_ipv6_callers_are_counted_by_their_slash_64(
        addresses: list[str], limited: bool, token_cancel_api: FunctionClient, functions_env: FunctionsEnv) -> None:
    statuses = [token_cancel_api.request("GET", query=f"token=guess-{n}", address=address).status
                for n, address in enumerate(addresses)]

    assert statuses[:10] == [404] * 10
    assert statuses[10] == (429 if limited else 404)


def test_nine_wrong_links_stay_under_the_limit_and_addresses_are_kept_only_hashed(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book_session) -> None:
    valid = link(book_session()["id"])

    statuses = [token_cancel_api.request("GET", query=f"token=guess-{n}", address="203.0.113.8").status
                for n in range(9)]
    statuses.append(token_cancel_api.request("GET", query="token=guess-9", address="203.0.113.8").status)
    statuses.append(token_cancel_api.request("GET", query=valid, address="203.0.113.8").status)

    assert statuses == [404] * 10 + [200]  # ten failures are refused as invalid, not yet limited
    keys = committed_db.execute("select distinct client_key from private.cancel_link_failures").fetchall()
    assert len(keys) == 1 and "203.0.113.8" not in keys[0]["client_key"]  # addresses are kept only hashed


@pytest.mark.parametrize("transport", ["app", "served"])
def test_rotating_the_link_secret_revokes_every_link_sent(
        transport: str, configured_functions_api, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        book_session) -> None:
    session = book_session()
    sent_before = link(session["id"])  # made with LINK_SECRET
    api = configured_functions_api(transport, CANCELLATION_LINK_SECRET=ROTATED_SECRET).token_cancel
    functions_env.set(CANCELLATION_LINK_SECRET=ROTATED_SECRET)
    sent_after = link(session["id"])

    assert sent_before != sent_after
    assert_page(api.request("GET", query=sent_before), 404, "invalid")
    assert_page(press_the_button(api, sent_before), 404, "invalid")
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "confirmed"
    assert_page(api.request("GET", query=sent_after), 200, "confirm")


def test_a_link_is_the_same_every_time_it_is_made_until_the_secret_rotates(functions_env: FunctionsEnv) -> None:
    """Reminder emails make the link again: nothing about it is stored."""
    session_id = uuid.uuid4()
    first = cancellation_url(session_id)

    assert cancellation_url(session_id) == first
    assert first.startswith(f"{functions_env.base_url}/token-cancel?token=")
    functions_env.set(CANCELLATION_LINK_SECRET=ROTATED_SECRET)
    assert cancellation_url(session_id) != first


# -- the calendar ------------------------------------------------------------------------------------

def test_calendar_down_during_a_link_cancel_still_cancels_and_keeps_the_deletion_queued(
        token_cancel_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        specialist: BookableSpecialist, book_session) -> None:
    session = book_session()
    functions_env.server.fail(500, times=None)

    answer = press_the_button(token_cancel_api, link(session["id"]))

    assert_page(answer, 200, "cancelled")
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "cancelled"
    queued = committed_db.execute("select * from private.calendar_deletions").fetchall()
    assert [(q["session_id"], q["event_id"], q["attempts"], q["completed_at"]) for q in queued] == [
        (session["id"], session["id"].hex, 1, None)]
    assert "500" in queued[0]["last_error"]
    assert session["id"].hex in functions_env.server.events(specialist.calendar_id)  # still there, for the retry job
    assert len(functions_env.server.api_calls("DELETE")) == 2  # the attempt and its one retry


# -- concurrency ------------------------------------------------------------------------------------------

def test_pressing_the_button_ten_times_at_once_cancels_once(
        served_functions, functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        specialist: BookableSpecialist, book_session) -> None:
    api = ServedClient(served_functions.base_url, "token-cancel")
    session = book_session()
    query = link(session["id"])
    barrier = threading.Barrier(10)
    answers: list[Answer] = []

    def press() -> None:
        barrier.wait()
        answers.append(press_the_button(api, query))

    threads = [threading.Thread(target=press) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted((a.status, title(a)) for a in answers) == (
        [(200, TITLES["cancelled"])] + [(409, TITLES["already cancelled"])] * 9)
    assert_cancelled_by_the_link(committed_db, functions_env.server, session["id"], client, specialist.calendar_id)


def test_a_forged_forwarded_for_header_is_ignored_without_a_trusted_proxy(functions_env, token_cancel_app):
    """With no proxy configured, X-Forwarded-For is the caller's own words: it must not
    let a guesser pose as ten different addresses."""
    statuses = [
        token_cancel_app.get(f"/?token=guess-{n}", headers={"X-Forwarded-For": f"198.51.100.{n}"},
                             environ_base={"REMOTE_ADDR": "192.0.2.77"}).status_code
        for n in range(11)
    ]
    assert statuses[:10] == [404] * 10, "each wrong link is refused as invalid"
    assert statuses[10] == 429, "the eleventh from the same socket address is refused, whatever the header says"
