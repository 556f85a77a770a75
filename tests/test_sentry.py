"""Error reporting (shared.monitoring, sentry-sdk), captured in-process through a test
transport: functions run through functions-framework's app in this process.

- server-side failures (calendar down, unhandled errors, deletions stuck for a day) are
  events tagged with the function, the session id and the error code;
- a caller's mistake is a breadcrumb, never an event;
- nothing personal leaves: no names, emails, reasons, notes, JWTs or cancellation tokens;
- events are flushed before the function answers.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from shared import calendar, cancellation, calendar_sync, monitoring
from shared.links import cancellation_url
from tests.functions_fixtures import (
    BookableSpecialist, FunctionsApi, FunctionsEnv, bearer, service_bearer, user_token,
)
from tests.support import Person, create_person, request_as

CALENDAR_ID = "rosa.lind@clinic.test"
SECRET_REASON = "Court hearing about the custody of my daughter"
SECRET_NOTE = "Client disclosed panic attacks at work"
SECRET_REQUEST = "Please use the side entrance, my ex must not see me"


class CaptureTransport(Transport):
    """Keeps every envelope instead of sending it, and notes when it is flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []
        self.log: list[str] = []  # "envelope" and "flush", in order
        self.breadcrumbs: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        self.log.append("envelope")

    def flush(self, timeout: float, callback: Any = None) -> None:
        self.log.append("flush")

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes if (event := envelope.get_event()) is not None]

    def serialized(self) -> str:
        return b"".join(envelope.serialize() for envelope in self.envelopes).decode("utf-8", "replace")


@pytest.fixture
def sentry(functions_env: FunctionsEnv) -> Iterator[CaptureTransport]:
    """Sentry on, in this process, with a transport that keeps what would be sent."""
    transport = CaptureTransport()

    def keep_breadcrumb(crumb: dict[str, Any], _hint: Any) -> dict[str, Any]:
        transport.breadcrumbs.append(dict(crumb))
        return crumb

    monitoring.reset()
    assert monitoring.init(transport=transport, before_breadcrumb=keep_breadcrumb)
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close(timeout=0)
        sentry_sdk.get_global_scope().set_client(None)
        monitoring.reset()


@pytest.fixture
def api(configured_functions_api) -> FunctionsApi:
    """The functions in this process (where the test transport is)."""
    return configured_functions_api("app")


@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Zelda Quartermaine", email="zelda.quartermaine@mail.test")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", calendar_id=CALENDAR_ID)


@pytest.fixture
def session(booked_session, specialist: BookableSpecialist, client: Person) -> dict:
    return booked_session(specialist, client)


def tags(event: dict[str, Any]) -> dict[str, str]:
    return dict(event.get("tags") or {})


def the_one_event(transport: CaptureTransport) -> dict[str, Any]:
    events = transport.events
    assert len(events) == 1, [(e.get("message"), e.get("exception"), tags(e)) for e in events]
    return events[0]


def queue_by_frontend(database_url: str, client: Person, session_id: uuid.UUID) -> None:
    """A cancellation inserted under RLS: its deletion is queued and not tried yet."""
    with request_as(database_url, client) as conn:
        conn.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, %s)",
                     [session_id, client.id, SECRET_REASON])


# -- events for server-side failures -------------------------------------------------------------

def test_calendar_down_during_a_booking_is_one_event_tagged_with_function_session_and_code(
        sentry: CaptureTransport, api: FunctionsApi, functions_env: FunctionsEnv, client: Person,
        specialist: BookableSpecialist) -> None:
    functions_env.server.fail(500, times=None)

    answer = api.booking_create.post_json({"specialist_id": str(specialist.id),
                                           "starts_at": specialist.slot().isoformat()}, headers=bearer(client))

    assert (answer.status, answer.json()["error"]) == (503, "CALENDAR_UNAVAILABLE")
    event = the_one_event(sentry)
    session_id = uuid.UUID(hex=functions_env.server.api_calls("POST")[0].json()["id"])  # the event id is the session's
    assert tags(event) == {"function": "booking-create", "session_id": str(session_id),
                           "error_code": "CALENDAR_UNAVAILABLE"}
    assert event["level"] == "error"
    assert event["exception"]["values"][-1]["type"] == "CalendarUnavailable"


def test_a_deletion_stuck_for_a_day_is_reported_once_by_calendar_sync(
        sentry: CaptureTransport, api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, session: dict) -> None:
    queue_by_frontend(functions_env.database_url, client, session["id"])
    committed_db.execute("update private.calendar_deletions set created_at = now() - interval '25 hours'")
    functions_env.server.fail(500, times=None, method="DELETE")

    first = api.calendar_sync.post_json({}, headers=service_bearer())
    committed_db.execute("update private.calendar_deletions set next_attempt_at = now()")
    second = api.calendar_sync.post_json({}, headers=service_bearer())

    assert [(a.status, a.json()["failed"], a.json()["stuck_reported"]) for a in (first, second)] == [
        (200, 1, 1), (200, 1, 0)]
    event = the_one_event(sentry)
    assert tags(event) == {"function": "calendar-sync", "session_id": str(session["id"]),
                           "error_code": "CALENDAR_UNAVAILABLE"}
    assert event["level"] == "error"
    assert str(session["id"]) in event["message"]
    assert committed_db.execute("select reported_at from private.calendar_deletions").fetchone()["reported_at"]


def test_an_unhandled_error_answers_a_bare_500_and_is_one_event(
        sentry: CaptureTransport, api: FunctionsApi, monkeypatch: pytest.MonkeyPatch,
        committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected failure: relation private.secret_table is corrupt")

    monkeypatch.setattr(cancellation, "cancel_session", broken)

    answer = api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "Ill"}, headers=bearer(client))

    assert (answer.status, answer.json()) == (500, {"success": False, "error": "INTERNAL_ERROR",
                                                    "message": "Something went wrong on our side"})
    assert "injected" not in answer.text and "secret_table" not in answer.text
    event = the_one_event(sentry)
    assert tags(event) == {"function": "booking-cancel", "session_id": str(session["id"]),
                           "error_code": "INTERNAL_ERROR"}
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "confirmed"


def test_an_error_after_the_commit_is_an_event_but_the_cancel_still_succeeds(
        sentry: CaptureTransport, api: FunctionsApi, monkeypatch: pytest.MonkeyPatch,
        committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise KeyError("unexpected failure inside the calendar client")

    monkeypatch.setattr(calendar.CalendarGateway, "delete_session_event", broken)

    answer = api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "Ill"}, headers=bearer(client))

    assert answer.status == 200, answer.text
    event = the_one_event(sentry)
    assert tags(event) == {"function": "booking-cancel", "session_id": str(session["id"]),
                           "error_code": "INTERNAL_ERROR"}
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    assert committed_db.execute("select completed_at from private.calendar_deletions").fetchone() == {
        "completed_at": None}  # left to the retry job


def test_the_event_is_flushed_before_the_function_answers(
        sentry: CaptureTransport, api: FunctionsApi, functions_env: FunctionsEnv, client: Person,
        specialist: BookableSpecialist) -> None:
    functions_env.server.fail(500, times=None)

    answer = api.booking_create.post_json({"specialist_id": str(specialist.id),
                                           "starts_at": specialist.slot().isoformat()}, headers=bearer(client))

    assert answer.status == 503
    assert sentry.log[-2:] == ["envelope", "flush"]


# -- a caller's mistakes are breadcrumbs ---------------------------------------------------------------

def _bad_json(api: FunctionsApi, client: Person, session: dict) -> Any:
    return api.booking_cancel.request("POST", body=b'{"booking_id": ', headers={
        "Content-Type": "application/json", **bearer(client)})


MISTAKES: dict[str, tuple[Callable[[FunctionsApi, Person, dict], Any], str]] = {
    "malformed JSON": (_bad_json, "INVALID_REQUEST"),
    "empty reason": (lambda api, client, session: api.booking_cancel.post_json(
        {"booking_id": str(session["id"]), "reason": " "}, headers=bearer(client)), "INVALID_REQUEST"),
    "no token": (lambda api, client, session: api.booking_cancel.post_json(
        {"booking_id": str(session["id"]), "reason": "Ill"}), "UNAUTHORIZED"),
    "unknown session": (lambda api, client, session: api.booking_cancel.post_json(
        {"booking_id": str(uuid.uuid4()), "reason": "Ill"}, headers=bearer(client)), "NOT_FOUND"),
    "anonymous sign-in": (lambda api, client, session: api.booking_cancel.post_json(
        {"booking_id": str(session["id"]), "reason": "Ill"}, headers=bearer(client, is_anonymous=True)), "FORBIDDEN"),
    "calendar-sync with a user token": (lambda api, client, session: api.calendar_sync.post_json(
        {}, headers=bearer(client)), "UNAUTHORIZED"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_a_callers_mistake_is_a_breadcrumb_not_an_event(
        case: str, sentry: CaptureTransport, api: FunctionsApi, client: Person, session: dict) -> None:
    send, code = MISTAKES[case]

    answer = send(api, client, session)

    assert answer.json()["error"] == code and 400 <= answer.status < 500
    assert sentry.events == []
    assert [(c.get("category"), c.get("message")) for c in sentry.breadcrumbs if c.get("category") == "validation"] \
        == [("validation", code)]


def test_an_already_cancelled_session_is_a_breadcrumb_not_an_event(
        sentry: CaptureTransport, api: FunctionsApi, client: Person, session: dict) -> None:
    first = api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "Ill"}, headers=bearer(client))
    again = api.booking_cancel.post_json({"booking_id": str(session["id"]), "reason": "Ill"}, headers=bearer(client))

    assert (first.status, again.status, again.json()["error"]) == (200, 409, "ALREADY_CANCELLED")
    assert sentry.events == []
    assert ("validation", "ALREADY_CANCELLED") in [(c.get("category"), c.get("message")) for c in sentry.breadcrumbs]


# -- nothing personal leaves ------------------------------------------------------------------------

def _booking_with_calendar_down(ctx: dict) -> None:
    ctx["server"].fail(500, times=None)
    answer = ctx["api"].booking_create.post_json(
        {"specialist_id": str(ctx["specialist"].id), "starts_at": ctx["specialist"].slot(days_ahead=6).isoformat(),
         "special_requests": SECRET_REQUEST}, headers={"Authorization": f"Bearer {ctx['jwt']}"})
    assert answer.status == 503, answer.text


def _cancel_failing_after_a_calendar_outage(ctx: dict) -> None:
    ctx["server"].fail(500, times=None, method="DELETE")
    real = calendar_sync.attempt_deletion

    def attempt_then_fail(session_id: uuid.UUID) -> bool:
        real(session_id)  # Google answers 500 (logged, retried later) …
        raise RuntimeError("injected failure after the calendar attempt")  # … then something breaks

    ctx["monkeypatch"].setattr(calendar_sync, "attempt_deletion", attempt_then_fail)
    answer = ctx["api"].booking_cancel.post_json({"booking_id": str(ctx["session"]["id"]), "reason": SECRET_REASON},
                                                 headers={"Authorization": f"Bearer {ctx['jwt']}"})
    assert answer.status == 200, answer.text  # committed before the failure: still a success, and an event


def _cancel_failing(ctx: dict) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected failure while cancelling")

    ctx["monkeypatch"].setattr(cancellation, "cancel_session", broken)
    answer = ctx["api"].booking_cancel.post_json({"booking_id": str(ctx["session"]["id"]), "reason": SECRET_REASON},
                                                 headers={"Authorization": f"Bearer {ctx['jwt']}"})
    assert answer.status == 500, answer.text


def _link_cancel_failing(ctx: dict) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected failure while cancelling from the link")

    ctx["monkeypatch"].setattr(cancellation, "cancel_session", broken)
    answer = ctx["api"].token_cancel.post_form({"token": ctx["link_token"]}, query=ctx["link_query"])
    assert answer.status == 500, answer.text


def _stuck_deletion(ctx: dict) -> None:
    queue_by_frontend(ctx["database_url"], ctx["client"], ctx["session"]["id"])
    ctx["db"].execute("update private.calendar_deletions set created_at = now() - interval '2 days'")
    ctx["server"].fail(500, times=None, method="DELETE")
    answer = ctx["api"].calendar_sync.post_json({}, headers=service_bearer())
    assert answer.json()["stuck_reported"] == 1, answer.text


LEAKY_SCENARIOS = {
    "booking-create with the calendar down": _booking_with_calendar_down,
    "booking-cancel with an unhandled error": _cancel_failing,
    "booking-cancel failing after a calendar outage": _cancel_failing_after_a_calendar_outage,
    "token-cancel failing": _link_cancel_failing,
    "calendar-sync reporting a stuck deletion": _stuck_deletion,
}


@pytest.mark.parametrize("scenario", list(LEAKY_SCENARIOS))
def test_events_carry_no_names_emails_reasons_notes_or_tokens(
        scenario: str, sentry: CaptureTransport, api: FunctionsApi, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, client: Person,
        specialist: BookableSpecialist, booked_session) -> None:
    session = booked_session(specialist, client, special_requests=SECRET_REQUEST)
    committed_db.execute(
        "insert into public.session_notes (booking_id, provider_id, notes) values (%s, %s, %s)",
        [session["id"], specialist.id, SECRET_NOTE])
    link = urlsplit(cancellation_url(session["id"]))
    jwt = user_token(client)
    context = {"api": api, "server": functions_env.server, "specialist": specialist, "client": client,
               "session": session, "jwt": jwt, "monkeypatch": monkeypatch, "db": committed_db,
               "database_url": functions_env.database_url, "link_query": link.query,
               "link_token": parse_qs(link.query)["token"][0]}

    LEAKY_SCENARIOS[scenario](context)

    assert sentry.events, "the scenario must produce an event"
    sent = sentry.serialized()
    secrets = {
        "client name": "Zelda", "client surname": "Quartermaine", "client email": client.email,
        "specialist name": "Rosa Lind", "specialist email": CALENDAR_ID, "specialist email, URL-encoded":
        quote(CALENDAR_ID, safe=""), "specialist email's user": "rosa.lind",
        "reason": SECRET_REASON, "note": SECRET_NOTE, "special requests": SECRET_REQUEST,
        "JWT": jwt, "JWT signature": jwt.rsplit(".", 1)[1], "cancellation token": context["link_token"],
        "cancellation token, URL-encoded": quote(context["link_token"], safe=""),
    }
    leaked = {name: value for name, value in secrets.items() if value in sent}
    assert leaked == {}, f"found in what would be sent to Sentry: {sorted(leaked)}"


# -- on only with a DSN ------------------------------------------------------------------------------

def test_sentry_is_off_without_a_dsn_and_on_with_one(functions_env: FunctionsEnv) -> None:
    monitoring.reset()
    try:
        assert monitoring.init() is False
        assert not sentry_sdk.get_client().is_active()

        functions_env.set(SENTRY_DSN="https://0123456789abcdef@sentry.example.test/42")
        assert monitoring.init() is True
        assert sentry_sdk.get_client().is_active()
        assert not sentry_sdk.get_client().should_send_default_pii()
        assert sentry_sdk.get_client().options["data_collection"]["user_info"] is False
    finally:
        sentry_sdk.get_client().close(timeout=0)
        sentry_sdk.get_global_scope().set_client(None)
        monitoring.reset()


def test_sentry_starts_without_deprecation_warnings(functions_env: FunctionsEnv) -> None:
    """The installed sentry-sdk deprecates send_default_pii: the data_collection option says the same."""
    monitoring.reset()
    functions_env.set(SENTRY_DSN="https://0123456789abcdef@sentry.example.test/42")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert monitoring.init() is True
        collection = sentry_sdk.get_client().options["data_collection"]
    finally:
        sentry_sdk.get_client().close(timeout=0)
        sentry_sdk.get_global_scope().set_client(None)
        monitoring.reset()

    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == []
    assert (collection["user_info"], collection["http_bodies"], collection["stack_frame_variables"]) == (False, [], False)
    assert collection["http_headers"]["request"]["mode"] == "off"
