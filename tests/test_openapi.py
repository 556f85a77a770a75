"""The OpenAPI document (shared/ops/openapi.py, served at /functions/v1/openapi.json)
is kept true by comparing it with what the functions do:

- it is valid OpenAPI 3.1, served by the local run, with a path for every
  function of deploy.yaml and none other;
- every outcome it documents (operation, status, error code) is produced by a
  request in SCENARIOS below, and every scenario's answer is one the document
  lists, with the documented content type and body schema;
- the required fields of each JSON body are exactly those the function refuses
  when missing; every documented field is accepted; an undocumented field is
  refused;
- a method the document does not list answers 405 with an Allow header naming
  exactly the documented methods.

Requests go to the served process (shared.ops.serve in gunicorn), except the
few outcomes that need other settings (a database that is not configured, a
notice period), which go through functions-framework's app of the same function
in this process.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import functions_framework
import jsonschema_rs
import psycopg
import pytest
import schemathesis

from shared.links import cancellation_url
from shared.ops.intake_openapi import EXAMPLE_INTAKE
from shared.ops.openapi import document as build_document
from shared.ops.serve import load_deploy
from tests.functions_fixtures import (
    Answer, AppClient, BookableSpecialist, FunctionClient, FunctionsEnv, ServedClient, bearer, fetch,
    service_bearer,
)
from tests.storage_fixtures import BUCKET, recording_path
from tests.storage_server import FakeStorageServer
from tests.support import Person, create_person

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = {spec.name: spec for spec in load_deploy(REPO_ROOT / "deploy.yaml")}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
JSON_HEADERS = {"Content-Type": "application/json"}
PAGE_TITLES = {
    "confirm": "Cancel this session?",
    "cancelled": "Your session is cancelled",
    "already cancelled": "This session was already cancelled",
    "started": "This session can no longer be cancelled",
    "invalid": "This cancellation link is not valid",
    "too many attempts": "Too many attempts",
    "error": "Something went wrong",
    "too large": "This request is too large",
    "moved": "Your session has moved",
    "choose a time": "Choose a new time",
    "not free": "This time is not free",
}


@pytest.fixture(scope="module")
def served_document(served_functions) -> dict[str, Any]:
    answer = fetch(f"{served_functions.base_url}/openapi.json")
    assert answer.status == 200 and answer.header("Content-Type") == "application/json"
    return answer.json()


# -- what a scenario acts with -------------------------------------------------------------------

@dataclass
class Scene:
    """A client, a bookable specialist and the functions (served, and as apps in this process)."""

    env: FunctionsEnv
    db: psycopg.Connection
    client: Person
    specialist: BookableSpecialist
    base_url: str
    apps: dict[str, Any]
    storage: FakeStorageServer | None = None

    def served(self, name: str) -> FunctionClient:
        return ServedClient(self.base_url, name)

    def app(self, name: str, **settings: str | None) -> FunctionClient:
        """The function as functions-framework's app in this process, with these settings changed."""
        self.env.set(**settings)
        return AppClient(self.apps[name])

    def session(self, *, starts_in: timedelta = timedelta(days=5), cancelled: bool = False) -> uuid.UUID:
        starts_at = datetime.now(timezone.utc).replace(microsecond=0) + starts_in
        session_id = self.db.execute(
            """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
               values (%s, %s, %s, %s) returning id""",
            [self.specialist.id, self.client.id, starts_at, starts_at + timedelta(minutes=50)]).fetchone()["id"]
        if cancelled:
            self.db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) "
                            "values (%s, %s, 'scenario')", [session_id, self.client.id])
        return session_id

    def link(self, session_id: uuid.UUID) -> str:
        """The query string of the session's cancellation link."""
        return urlsplit(cancellation_url(session_id)).query

    def recording(self, *, expired: bool = False) -> uuid.UUID:
        """A recording of a past session of the client's, with its file in Storage (or long expired)."""
        session_id = self.session(starts_in=timedelta(days=-3))
        session = self.db.execute("select id, starts_at from public.sessions where id = %s", [session_id]).fetchone()
        path = recording_path(session)
        created_ago, expires_in = (timedelta(days=2), timedelta(days=-1)) if expired else (timedelta(0), None)
        now = datetime.now(timezone.utc)
        recording_id = self.db.execute(
            """insert into public.meeting_recordings (booking_id, storage_path, file_format, created_at, expires_at)
               values (%s, %s, 'mp4', %s, %s) returning id""",
            [session_id, path, now - created_ago, now + expires_in if expires_in else None]).fetchone()["id"]
        assert self.storage is not None
        self.storage.put(BUCKET, path)
        return recording_id

    def book(self, **fields: Any) -> dict[str, Any]:
        return {"specialist_id": str(self.specialist.id),
                "starts_at": self.specialist.slot(days_ahead=3, local_time="10:00").isoformat(), **fields}


@pytest.fixture(scope="module")
def apps() -> dict[str, Any]:
    return {name: functions_framework.create_app(spec.entry_point, str(REPO_ROOT / spec.source / "main.py"))
            for name, spec in FUNCTIONS.items()}


@pytest.fixture
def scene(functions_env: FunctionsEnv, committed_db: psycopg.Connection, bookable_specialist, served_functions,
          apps, storage) -> Scene:
    client = create_person(committed_db, "client", full_name="Alice Client", timezone="Europe/London")
    return Scene(functions_env, committed_db, client, bookable_specialist(), served_functions.base_url, apps,
                 storage)


# -- the scenarios: one request each, and the outcome it must have --------------------------------

@dataclass(frozen=True)
class Scenario:
    path: str
    method: str
    status: int
    outcome: str  # JSON: the error code, or "success"; HTML: the page (a PAGE_TITLES key)
    act: Callable[[Scene], Answer]

    @property
    def documented_as(self) -> tuple[str, str, int, str | None]:
        """What the document can say of it: pages are told apart by status only; a report
        (health, the document itself) is a documented schema, like a success."""
        if self.outcome == "report":
            return (self.path, self.method, self.status, "success")
        return (self.path, self.method, self.status, None if self.outcome in PAGE_TITLES else self.outcome)


def _post(name: str, payload: Any = None, *, headers: dict[str, str] | None = None, body: str | None = None,
          content_type: str = "application/json", via: Callable[[Scene], FunctionClient] | None = None):
    def act(scene: Scene) -> Answer:
        client = via(scene) if via else scene.served(name)
        sent = body if body is not None else json.dumps(payload(scene) if callable(payload) else payload)
        found = headers(scene) if callable(headers) else headers
        return client.request("POST", body=sent, headers={"Content-Type": content_type, **(found or {})})
    return act


def _stuck_deletion(scene: Scene) -> Scene:
    """A calendar deletion pending since two days (functions_env empties the queue afterwards)."""
    scene.db.execute("insert into private.calendar_deletions (session_id, calendar_id, event_id, created_at) "
                     "values (%s, 'primary', 'stuck', now() - interval '2 days')", [uuid.uuid4()])
    return scene


def _as_client(scene: Scene) -> dict[str, str]:
    return bearer(scene.client)


def _as_specialist(scene: Scene) -> dict[str, str]:
    return bearer(scene.specialist.person)


def _as_service(scene: Scene) -> dict[str, str]:
    return service_bearer()


def _calendar_down(scene: Scene) -> Answer:
    scene.env.server.fail(503, times=None, method="POST", path_prefix="/calendar/v3/calendars/")
    return scene.served("booking-create").post_json(scene.book(), headers=bearer(scene.client))


def _link(kind: str, method: str) -> Callable[[Scene], Answer]:
    """Opens (GET) or confirms (POST) a cancellation link of the given kind."""
    def send(scene: Scene, client: FunctionClient, query: str, address: str | None = None) -> Answer:
        if method == "GET":
            return client.request("GET", query=query, address=address)
        token = query.partition("=")[2]
        return client.request("POST", query=query, body=urlencode({"token": token}), address=address,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})

    def act(scene: Scene) -> Answer:
        if kind == "error":
            return send(scene, scene.app("token-cancel", CANCELLATION_LINK_SECRET=None), "token=forged")
        if kind == "invalid":
            return send(scene, scene.served("token-cancel"), "token=forged")
        if kind == "too large":  # a form over token-cancel's 1 KiB cap
            return scene.served("token-cancel").request(
                "POST", body=urlencode({"token": "t" * 2048}),
                headers={"Content-Type": "application/x-www-form-urlencoded"})
        if kind == "too many attempts":
            address = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
            for _ in range(10):
                assert send(scene, scene.served("token-cancel"), "token=forged", address).status == 404
            return send(scene, scene.served("token-cancel"), "token=forged", address)
        starts_in = timedelta(minutes=-5) if kind == "started" else timedelta(days=5)
        session_id = scene.session(starts_in=starts_in, cancelled=kind == "already cancelled")
        return send(scene, scene.served("token-cancel"), scene.link(session_id))
    return act


def _link_move(choice: str | None) -> Callable[[Scene], Answer]:
    """Sends the link page's move form for a new session: a free time, one too soon, or none."""
    def act(scene: Scene) -> Answer:
        query = scene.link(scene.session())
        form = {"token": query.partition("=")[2], "action": "reschedule"}
        if choice is not None:
            days, local_time = (4, "11:00") if choice == "free" else (0, "23:00")
            form["starts_at"] = scene.specialist.slot(days_ahead=days, local_time=local_time).isoformat()
        return scene.served("token-cancel").request(
            "POST", query=query, body=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"})
    return act


def _unconfigured_database(name: str) -> Callable[[Scene], FunctionClient]:
    return lambda scene: scene.app(name, DATABASE_URL=None)


def _storage_unreachable(name: str) -> Callable[[Scene], FunctionClient]:
    return lambda scene: scene.app(name, SUPABASE_URL="http://127.0.0.1:9")  # the discard port: nothing answers


TOO_LARGE = json.dumps({"reason": "x" * 70_000})
INTAKE = lambda scene: {"booking_id": str(scene.session()), **EXAMPLE_INTAKE}  # noqa: E731


def _read_intake(*, headers: Callable[[Scene], dict[str, str]] = _as_client,
                 via: Callable[[Scene], FunctionClient] | None = None, tamper: bool = False):
    """Submits a form for a new session of the scene's client, then reads it."""
    def act(scene: Scene) -> Answer:
        body = INTAKE(scene)
        assert scene.served("intake-form").post_json(body, headers=_as_client(scene)).status == 200
        if tamper:
            scene.db.execute("update public.intake_forms set ciphertext = set_byte(ciphertext, 0, "
                             "get_byte(ciphertext, 0) # 1) where booking_id = %s", [body["booking_id"]])
        client = via(scene) if via else scene.served("intake-form")
        return client.request("GET", query=f"booking_id={body['booking_id']}", headers=headers(scene))
    return act

RECORDING = lambda scene, **options: {"recording_id": str(scene.recording(**options))}  # noqa: E731
CANCEL = lambda scene, **fields: {"booking_id": str(scene.session()), "reason": "I am ill", **fields}  # noqa: E731
NEW_TIME = lambda scene: scene.specialist.slot(days_ahead=4, local_time="11:00").isoformat()  # noqa: E731
MOVE = lambda scene: {"booking_id": str(scene.session()), "starts_at": NEW_TIME(scene)}  # noqa: E731

SCENARIOS = {
    # booking-create
    "booking a free slot": Scenario("/booking-create", "post", 200, "success",
                                    _post("booking-create", lambda s: s.book(), headers=_as_client)),
    "booking with an unknown field": Scenario("/booking-create", "post", 400, "INVALID_REQUEST",
                                              _post("booking-create", lambda s: s.book(room=2), headers=_as_client)),
    "booking without a token": Scenario("/booking-create", "post", 401, "UNAUTHORIZED",
                                        _post("booking-create", lambda s: s.book())),
    "a specialist booking": Scenario("/booking-create", "post", 403, "FORBIDDEN",
                                     _post("booking-create", lambda s: s.book(), headers=_as_specialist)),
    "booking an unknown specialist": Scenario(
        "/booking-create", "post", 404, "NOT_FOUND",
        _post("booking-create", lambda s: s.book(specialist_id=str(uuid.uuid4())), headers=_as_client)),
    "booking too soon": Scenario(
        "/booking-create", "post", 409, "SLOT_UNAVAILABLE",
        _post("booking-create", lambda s: s.book(starts_at=s.specialist.slot(days_ahead=0, local_time="23:00")
                                                 .isoformat()), headers=_as_client)),
    "booking with a huge body": Scenario("/booking-create", "post", 413, "PAYLOAD_TOO_LARGE",
                                         _post("booking-create", body=TOO_LARGE, headers=_as_client)),
    "booking with a form body": Scenario(
        "/booking-create", "post", 415, "UNSUPPORTED_MEDIA_TYPE",
        _post("booking-create", body="specialist_id=1", content_type="application/x-www-form-urlencoded",
              headers=_as_client)),
    "booking with no database configured": Scenario(
        "/booking-create", "post", 500, "INTERNAL_ERROR",
        _post("booking-create", lambda s: s.book(), headers=_as_client, via=_unconfigured_database("booking-create"))),
    "booking while the calendar is down": Scenario("/booking-create", "post", 503, "CALENDAR_UNAVAILABLE",
                                                   _calendar_down),
    # booking-cancel
    "cancelling an upcoming session": Scenario("/booking-cancel", "post", 200, "success",
                                               _post("booking-cancel", CANCEL, headers=_as_client)),
    "cancelling without a reason": Scenario(
        "/booking-cancel", "post", 400, "INVALID_REQUEST",
        _post("booking-cancel", lambda s: {"booking_id": str(s.session())}, headers=_as_client)),
    "cancelling without a token": Scenario("/booking-cancel", "post", 401, "UNAUTHORIZED",
                                           _post("booking-cancel", CANCEL)),
    "an anonymous account cancelling": Scenario(
        "/booking-cancel", "post", 403, "FORBIDDEN",
        _post("booking-cancel", CANCEL, headers=lambda s: bearer(s.client, is_anonymous=True))),
    "cancelling an unknown session": Scenario(
        "/booking-cancel", "post", 404, "NOT_FOUND",
        _post("booking-cancel", {"booking_id": str(uuid.uuid4()), "reason": "ill"}, headers=_as_client)),
    "cancelling twice": Scenario(
        "/booking-cancel", "post", 409, "ALREADY_CANCELLED",
        _post("booking-cancel", lambda s: {"booking_id": str(s.session(cancelled=True)), "reason": "ill"},
              headers=_as_client)),
    "cancelling a session that started": Scenario(
        "/booking-cancel", "post", 409, "BOOKING_IN_PAST",
        _post("booking-cancel", lambda s: {"booking_id": str(s.session(starts_in=timedelta(minutes=-5))),
                                           "reason": "ill"}, headers=_as_client)),
    "a client cancelling inside the notice period": Scenario(
        "/booking-cancel", "post", 409, "CANCELLATION_TOO_LATE",
        _post("booking-cancel", CANCEL, headers=_as_client,
              via=lambda s: s.app("booking-cancel", CANCELLATION_MIN_NOTICE_HOURS="1000"))),
    "cancelling with a huge body": Scenario("/booking-cancel", "post", 413, "PAYLOAD_TOO_LARGE",
                                            _post("booking-cancel", body=TOO_LARGE, headers=_as_client)),
    "cancelling with a text body": Scenario(
        "/booking-cancel", "post", 415, "UNSUPPORTED_MEDIA_TYPE",
        _post("booking-cancel", body="cancel", content_type="text/plain", headers=_as_client)),
    "cancelling with no database configured": Scenario(
        "/booking-cancel", "post", 500, "INTERNAL_ERROR",
        _post("booking-cancel", {"booking_id": str(uuid.uuid4()), "reason": "ill"}, headers=_as_client,
              via=_unconfigured_database("booking-cancel"))),
    # token-cancel
    **{f"{'opening' if method == 'GET' else 'confirming'} a link: {kind}": Scenario(
        "/token-cancel", method.lower(), status, page, _link(kind, method))
       for method, first in (("GET", "confirm"), ("POST", "cancelled"))
       for kind, status, page in ((first, 200, first), ("invalid", 404, "invalid"),
                                  ("already cancelled", 409, "already cancelled"), ("started", 409, "started"),
                                  ("too many attempts", 429, "too many attempts"), ("error", 500, "error"))},
    "confirming a link: too large": Scenario("/token-cancel", "post", 413, "too large", _link("too large", "POST")),
    "moving from a link": Scenario("/token-cancel", "post", 200, "moved", _link_move("free")),
    "moving from a link without a time": Scenario("/token-cancel", "post", 400, "choose a time",
                                                  _link_move(None)),
    "moving from a link to a time that is not free": Scenario("/token-cancel", "post", 409, "not free",
                                                              _link_move("too soon")),
    # booking-reschedule
    "moving an upcoming session": Scenario("/booking-reschedule", "post", 200, "success",
                                           _post("booking-reschedule", MOVE, headers=_as_client)),
    "moving without a time": Scenario(
        "/booking-reschedule", "post", 400, "INVALID_REQUEST",
        _post("booking-reschedule", lambda s: {"booking_id": str(s.session())}, headers=_as_client)),
    "moving without a token": Scenario("/booking-reschedule", "post", 401, "UNAUTHORIZED",
                                       _post("booking-reschedule", MOVE)),
    "an anonymous account moving": Scenario(
        "/booking-reschedule", "post", 403, "FORBIDDEN",
        _post("booking-reschedule", MOVE, headers=lambda s: bearer(s.client, is_anonymous=True))),
    "moving an unknown session": Scenario(
        "/booking-reschedule", "post", 404, "NOT_FOUND",
        _post("booking-reschedule", lambda s: {"booking_id": str(uuid.uuid4()), "starts_at": NEW_TIME(s)}, headers=_as_client)),
    "moving a cancelled session": Scenario(
        "/booking-reschedule", "post", 409, "ALREADY_CANCELLED",
        _post("booking-reschedule", lambda s: {"booking_id": str(s.session(cancelled=True)), "starts_at": NEW_TIME(s)},
              headers=_as_client)),
    "moving a session that has started": Scenario(
        "/booking-reschedule", "post", 409, "BOOKING_IN_PAST",
        _post("booking-reschedule",
              lambda s: {"booking_id": str(s.session(starts_in=timedelta(minutes=-5))), "starts_at": NEW_TIME(s)},
              headers=_as_client)),
    "moving to a time too soon": Scenario(
        "/booking-reschedule", "post", 409, "SLOT_UNAVAILABLE",
        _post("booking-reschedule",
              lambda s: {**MOVE(s), "starts_at": s.specialist.slot(days_ahead=0, local_time="23:00").isoformat()},
              headers=_as_client)),
    "a client moving inside the minimum notice": Scenario(
        "/booking-reschedule", "post", 409, "RESCHEDULE_TOO_LATE",
        _post("booking-reschedule", MOVE, headers=_as_client,
              via=lambda s: s.app("booking-reschedule", CANCELLATION_MIN_NOTICE_HOURS="1000"))),
    "moving with a huge body": Scenario("/booking-reschedule", "post", 413, "PAYLOAD_TOO_LARGE",
                                        _post("booking-reschedule", body=TOO_LARGE, headers=_as_client)),
    "moving with a form body": Scenario(
        "/booking-reschedule", "post", 415, "UNSUPPORTED_MEDIA_TYPE",
        _post("booking-reschedule", body="booking_id=1", content_type="application/x-www-form-urlencoded",
              headers=_as_client)),
    "moving with no database configured": Scenario(
        "/booking-reschedule", "post", 500, "INTERNAL_ERROR",
        _post("booking-reschedule", lambda s: {"booking_id": str(uuid.uuid4()), "starts_at": NEW_TIME(s)}, headers=_as_client,
              via=_unconfigured_database("booking-reschedule"))),
    # calendar-sync
    "the scheduler retrying deletions": Scenario("/calendar-sync", "post", 200, "success",
                                                 _post("calendar-sync", {}, headers=_as_service)),
    "retrying deletions as a user": Scenario("/calendar-sync", "post", 401, "UNAUTHORIZED",
                                             _post("calendar-sync", {}, headers=_as_client)),
    "retrying deletions with no database configured": Scenario(
        "/calendar-sync", "post", 500, "INTERNAL_ERROR",
        _post("calendar-sync", {}, headers=_as_service, via=_unconfigured_database("calendar-sync"))),
    # notifications
    "the scheduler sending emails": Scenario("/notifications", "post", 200, "success",
                                             _post("notifications", {}, headers=_as_service)),
    "sending emails as a user": Scenario("/notifications", "post", 401, "UNAUTHORIZED",
                                         _post("notifications", {}, headers=_as_client)),
    "sending emails with no database configured": Scenario(
        "/notifications", "post", 500, "INTERNAL_ERROR",
        _post("notifications", {}, headers=_as_service,
              via=lambda scene: scene.app("notifications", DATABASE_URL=None, SMTP_URL="smtp://127.0.0.1:9",
                                          EMAIL_FROM="bookings@example.test"))),
    # recurring-dispatcher
    "the scheduler dispatching": Scenario("/recurring-dispatcher", "post", 200, "success",
                                          _post("recurring-dispatcher", {"dry_run": True}, headers=_as_service)),
    "dispatching too far ahead": Scenario("/recurring-dispatcher", "post", 400, "INVALID_REQUEST",
                                          _post("recurring-dispatcher", {"horizon_days": 61}, headers=_as_service)),
    "dispatching without the service key": Scenario("/recurring-dispatcher", "post", 401, "UNAUTHORIZED",
                                                    _post("recurring-dispatcher", {}, headers=_as_client)),
    "dispatching with a huge body": Scenario("/recurring-dispatcher", "post", 413, "PAYLOAD_TOO_LARGE",
                                             _post("recurring-dispatcher", body=TOO_LARGE, headers=_as_service)),
    "dispatching with a text body": Scenario(
        "/recurring-dispatcher", "post", 415, "UNSUPPORTED_MEDIA_TYPE",
        _post("recurring-dispatcher", body="go", content_type="text/plain", headers=_as_service)),
    "health": Scenario("/health", "get", 200, "report", lambda scene: scene.served("health").request("GET")),
    "health with a calendar deletion stuck for a day": Scenario(
        "/health", "get", 503, "report", lambda scene: _stuck_deletion(scene).served("health").request("GET")),
    "the document": Scenario("/openapi.json", "get", 200, "report",
                             lambda scene: scene.served("openapi.json").request("GET")),
    "dispatching with no database configured": Scenario(
        "/recurring-dispatcher", "post", 500, "INTERNAL_ERROR",
        _post("recurring-dispatcher", {}, headers=_as_service, via=_unconfigured_database("recurring-dispatcher"))),
    # intake-form
    "submitting an intake form": Scenario("/intake-form", "post", 200, "success",
                                          _post("intake-form", INTAKE, headers=_as_client)),
    "submitting an intake form without consent": Scenario(
        "/intake-form", "post", 400, "INVALID_REQUEST",
        _post("intake-form", lambda s: {**INTAKE(s), "consents": {"treatment": True}}, headers=_as_client)),
    "submitting an intake form without a token": Scenario("/intake-form", "post", 401, "UNAUTHORIZED",
                                                          _post("intake-form", INTAKE)),
    "an anonymous account submitting an intake form": Scenario(
        "/intake-form", "post", 403, "FORBIDDEN",
        _post("intake-form", INTAKE, headers=lambda s: bearer(s.client, is_anonymous=True))),
    "the specialist submitting the client's intake form": Scenario(
        "/intake-form", "post", 404, "NOT_FOUND", _post("intake-form", INTAKE, headers=_as_specialist)),
    "submitting an intake form for a cancelled session": Scenario(
        "/intake-form", "post", 409, "ALREADY_CANCELLED",
        _post("intake-form", lambda s: {"booking_id": str(s.session(cancelled=True)), **EXAMPLE_INTAKE},
              headers=_as_client)),
    "submitting an intake form after the session started": Scenario(
        "/intake-form", "post", 409, "BOOKING_IN_PAST",
        _post("intake-form", lambda s: {"booking_id": str(s.session(starts_in=timedelta(minutes=-5))), **EXAMPLE_INTAKE},
              headers=_as_client)),
    "submitting an intake form with a huge body": Scenario("/intake-form", "post", 413, "PAYLOAD_TOO_LARGE",
                                                           _post("intake-form", body=TOO_LARGE, headers=_as_client)),
    "submitting an intake form as a form post": Scenario(
        "/intake-form", "post", 415, "UNSUPPORTED_MEDIA_TYPE",
        _post("intake-form", body="answers=1", content_type="application/x-www-form-urlencoded", headers=_as_client)),
    "submitting an intake form with no database configured": Scenario(
        "/intake-form", "post", 500, "INTERNAL_ERROR",
        _post("intake-form", INTAKE, headers=_as_client, via=_unconfigured_database("intake-form"))),
    "reading an intake form": Scenario("/intake-form", "get", 200, "success", _read_intake()),
    "reading an intake form without booking_id": Scenario(
        "/intake-form", "get", 400, "INVALID_REQUEST",
        lambda s: s.served("intake-form").request("GET", headers=_as_client(s))),
    "reading an intake form without a token": Scenario("/intake-form", "get", 401, "UNAUTHORIZED",
                                                       _read_intake(headers=lambda s: {})),
    "an anonymous account reading an intake form": Scenario(
        "/intake-form", "get", 403, "FORBIDDEN", _read_intake(headers=lambda s: bearer(s.client, is_anonymous=True))),
    "a stranger reading an intake form": Scenario(
        "/intake-form", "get", 404, "NOT_FOUND",
        _read_intake(headers=lambda s: bearer(create_person(s.db, "client")))),
    "reading an intake form with no database configured": Scenario(
        "/intake-form", "get", 500, "INTERNAL_ERROR", _read_intake(via=_unconfigured_database("intake-form"))),
    "reading an intake form that was altered": Scenario("/intake-form", "get", 500, "INTAKE_UNREADABLE",
                                                        _read_intake(tamper=True)),
    # recording-url
    "a party asking for a recording's link": Scenario("/recording-url", "post", 200, "success",
                                                      _post("recording-url", RECORDING, headers=_as_client)),
    "asking for a link without the recording": Scenario("/recording-url", "post", 400, "INVALID_REQUEST",
                                                        _post("recording-url", {}, headers=_as_client)),
    "asking for a link without a token": Scenario("/recording-url", "post", 401, "UNAUTHORIZED",
                                                  _post("recording-url", RECORDING)),
    "an anonymous account asking for a link": Scenario(
        "/recording-url", "post", 403, "FORBIDDEN",
        _post("recording-url", RECORDING, headers=lambda s: bearer(s.client, is_anonymous=True))),
    "asking for a link to an unknown recording": Scenario(
        "/recording-url", "post", 404, "NOT_FOUND",
        _post("recording-url", {"recording_id": str(uuid.uuid4())}, headers=_as_client)),
    "asking for a link to an expired recording": Scenario(
        "/recording-url", "post", 410, "RECORDING_EXPIRED",
        _post("recording-url", lambda s: RECORDING(s, expired=True), headers=_as_client)),
    "asking for a link with a huge body": Scenario("/recording-url", "post", 413, "PAYLOAD_TOO_LARGE",
                                                   _post("recording-url", body=TOO_LARGE, headers=_as_client)),
    "asking for a link with a text body": Scenario(
        "/recording-url", "post", 415, "UNSUPPORTED_MEDIA_TYPE",
        _post("recording-url", body="link", content_type="text/plain", headers=_as_client)),
    "asking for a link with no database configured": Scenario(
        "/recording-url", "post", 500, "INTERNAL_ERROR",
        _post("recording-url", {"recording_id": str(uuid.uuid4())}, headers=_as_client,
              via=_unconfigured_database("recording-url"))),
    "asking for a link while Storage is down": Scenario(
        "/recording-url", "post", 503, "STORAGE_UNAVAILABLE",
        _post("recording-url", RECORDING, headers=_as_client, via=_storage_unreachable("recording-url"))),
    # recording-expiry
    "the scheduler removing expired recordings": Scenario(
        "/recording-expiry", "post", 200, "success",
        _post("recording-expiry", lambda s: s.recording(expired=True) and {}, headers=_as_service)),
    "removing expired recordings as a user": Scenario("/recording-expiry", "post", 401, "UNAUTHORIZED",
                                                      _post("recording-expiry", {}, headers=_as_client)),
    "removing expired recordings with no database configured": Scenario(
        "/recording-expiry", "post", 500, "INTERNAL_ERROR",
        _post("recording-expiry", {}, headers=_as_service, via=_unconfigured_database("recording-expiry"))),
    "removing expired recordings while Storage is down": Scenario(
        "/recording-expiry", "post", 503, "STORAGE_UNAVAILABLE",
        _post("recording-expiry", lambda s: s.recording(expired=True) and {}, headers=_as_service,
              via=_storage_unreachable("recording-expiry"))),
}


# -- reading the document ----------------------------------------------------------------------------

def documented_outcomes(document: dict[str, Any]) -> set[tuple[str, str, int, str | None]]:
    """(path, method, status, error code / "success" / None for a page) for every documented answer."""
    outcomes = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                for media, content in response["content"].items():
                    if media != "application/json":
                        outcomes.add((path, method, int(status), None))
                    elif "$ref" in content["schema"]:
                        outcomes.add((path, method, int(status), "success"))
                    else:
                        outcomes.update((path, method, int(status), code)
                                        for code in content["schema"]["properties"]["error"]["enum"])
    return outcomes


def assert_documented(document: dict[str, Any], path: str, method: str, answer: Answer) -> None:
    """The answer is one the document lists for the operation, with its content type and schema."""
    responses = document["paths"][path][method]["responses"]
    assert str(answer.status) in responses, f"{method.upper()} {path} answered {answer.status}, not documented"
    (media, content), = responses[str(answer.status)]["content"].items()
    assert (answer.header("Content-Type") or "").split(";")[0] == media
    if media == "application/json":
        root = {**content["schema"], "components": document["components"]}
        validator = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
        errors = [f"{'/'.join(map(str, error.instance_path))}: {error.message}"
                  for error in validator.iter_errors(answer.json())]
        assert errors == [], answer.json()


def _page_title(answer: Answer) -> str:
    match = re.search(r"<h1>(.*?)</h1>", answer.text, re.S)
    assert match, answer.text[:300]
    return html.unescape(match.group(1))


# -- the tests -----------------------------------------------------------------------------------------

def test_document_is_valid_openapi_3_1_and_served_by_the_local_run(served_document, served_functions):
    assert served_document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(served_document).validate()
    assert served_document == json.loads(json.dumps(build_document(served_functions.base_url)))
    assert served_document["servers"][0]["url"] == served_functions.base_url


SERVER_PATHS = {"/health", "/openapi.json"}  # served beside the functions by shared.ops.serve


def test_every_function_of_deploy_yaml_has_a_path_and_no_other_path_exists(served_document):
    assert set(served_document["paths"]) == {f"/{name}" for name in FUNCTIONS} | SERVER_PATHS


def test_every_documented_outcome_is_produced_by_a_scenario(served_document):
    produced = {scenario.documented_as for scenario in SCENARIOS.values()}
    documented = documented_outcomes(served_document)
    assert documented - produced == set(), "documented but never produced"
    assert produced - documented == set(), "produced but not documented"


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_answers_as_documented(name: str, scene: Scene, served_document):
    scenario = SCENARIOS[name]
    answer = scenario.act(scene)
    assert_documented(served_document, scenario.path, scenario.method, answer)
    if scenario.outcome in PAGE_TITLES:
        assert (answer.status, _page_title(answer)) == (scenario.status, PAGE_TITLES[scenario.outcome])
    elif scenario.outcome == "success":
        assert (answer.status, answer.json()["success"]) == (scenario.status, True)
    elif scenario.outcome == "report":
        assert answer.status == scenario.status, answer.text
    else:
        assert (answer.status, answer.json()["error"]) == (scenario.status, scenario.outcome), answer.json()


def _json_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(path, method) for path, item in document["paths"].items() for method, operation in item.items()
            if "application/json" in operation.get("requestBody", {}).get("content", {})]


def _body_schema(document: dict[str, Any], path: str, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    content = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    name = content["schema"]["$ref"].rpartition("/")[2]
    return document["components"]["schemas"][name], content["example"]


CREDENTIALS = {"/booking-create": _as_client, "/booking-cancel": _as_client, "/booking-reschedule": _as_client,
               "/recurring-dispatcher": _as_service, "/calendar-sync": _as_service, "/intake-form": _as_client,
               "/notifications": _as_service, "/recording-url": _as_client, "/recording-expiry": _as_service}


def _send(scene: Scene, path: str, body: dict[str, Any]) -> Answer:
    return scene.served(path.strip("/")).post_json(body, headers=CREDENTIALS[path](scene))


def test_every_json_body_is_documented_with_an_example_of_every_field(served_document):
    operations = _json_operations(served_document)
    assert {path for path, _ in operations} == {"/booking-create", "/booking-cancel", "/recurring-dispatcher",
                                                "/intake-form", "/recording-url", "/booking-reschedule"}
    for path, method in operations:
        schema, example = _body_schema(served_document, path, method)
        assert schema["additionalProperties"] is False
        assert set(example) == set(schema["properties"]), path


def _required_fields() -> list[tuple[str, str]]:
    document = build_document()
    return [(path, field) for path, method in _json_operations(document)
            for field in _body_schema(document, path, method)[0].get("required", [])]


@pytest.mark.parametrize("path, field", _required_fields())
def test_a_documented_required_field_is_refused_when_missing(path: str, field: str, scene: Scene,
                                                             served_document):
    schema, example = _body_schema(served_document, path, "post")
    answer = _send(scene, path, {key: value for key, value in example.items() if key != field})
    assert answer.status == 400, answer.json()
    assert answer.json()["error"] == "INVALID_REQUEST"
    assert answer.json()["details"] == {"field": field}


@pytest.mark.parametrize("path", ["/booking-create", "/booking-cancel", "/recurring-dispatcher", "/intake-form",
                                  "/recording-url", "/booking-reschedule"])
def test_only_the_documented_required_fields_are_needed_and_every_documented_field_is_accepted(
        path: str, scene: Scene, served_document):
    schema, example = _body_schema(served_document, path, "post")
    required_only = {key: value for key, value in example.items() if key in schema.get("required", [])}
    for body in (required_only, example):
        answer = _send(scene, path, body)
        # Past parsing: the example's ids name nothing here, so NOT_FOUND is as far as they go
        # (the dispatcher needs no ids: it runs, and finds nothing due).
        assert answer.status == (200 if path == "/recurring-dispatcher" else 404), (body, answer.json())
        assert_documented(served_document, path, "post", answer)


@pytest.mark.parametrize("path", ["/booking-create", "/booking-cancel", "/recurring-dispatcher", "/intake-form",
                                  "/recording-url", "/booking-reschedule"])
def test_an_undocumented_field_is_refused(path: str, scene: Scene, served_document):
    _, example = _body_schema(served_document, path, "post")
    answer = _send(scene, path, {**example, "notes_for_admin": "hello"})
    assert (answer.status, answer.json()["error"]) == (400, "INVALID_REQUEST")
    assert answer.json()["details"] == {"field": "notes_for_admin"}


@pytest.mark.parametrize("path, field", [("/booking-create", "special_requests"), ("/booking-cancel", "reason"),
                                         ("/booking-reschedule", "reason")])
def test_text_with_a_nul_character_is_refused_as_documented_not_a_server_error(path: str, field: str, scene: Scene,
                                                                              served_document):
    """The document excludes NUL from text fields: PostgreSQL text cannot hold it."""
    schema, example = _body_schema(served_document, path, "post")
    assert "\\x00" in schema["properties"][field]["pattern"]
    body = {**example, field: "first line\x00second line"}
    if path == "/booking-create":
        body = scene.book(**{field: body[field]})  # a bookable slot: only the text can be refused
    else:
        body["booking_id"] = str(scene.session())
    answer = _send(scene, path, body)
    assert (answer.status, answer.json().get("error"), answer.json().get("details")) == (
        400, "INVALID_REQUEST", {"field": field})


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_an_undocumented_method_answers_405_allowing_exactly_the_documented_ones(name: str, scene: Scene,
                                                                                served_document):
    documented = {method.upper() for method in served_document["paths"][f"/{name}"] if method in HTTP_METHODS}
    for method in ("PUT", "DELETE", "PATCH"):
        answer = scene.served(name).request(method, headers=JSON_HEADERS, body="{}")
        assert answer.status == 405
        assert {allowed.strip() for allowed in answer.header("Allow").split(",")} == documented
        if name == "token-cancel":
            assert answer.header("Content-Type").startswith("text/html")
        else:
            assert answer.json()["error"] == "METHOD_NOT_ALLOWED"


def test_token_cancel_documents_its_token_as_its_only_parameter(served_document):
    for method, operation in served_document["paths"]["/token-cancel"].items():
        assert [(p["name"], p["in"]) for p in operation["parameters"]] == [("token", "query")], method
        assert operation["security"] == []
    form = served_document["paths"]["/token-cancel"]["post"]["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]


def test_user_and_service_functions_document_their_credentials(served_document):
    security = {path: item["post"]["security"] for path, item in served_document["paths"].items() if "post" in item}
    assert security == {"/booking-create": [{"userToken": []}], "/booking-cancel": [{"userToken": []}],
                        "/booking-reschedule": [{"userToken": []}],
                        "/calendar-sync": [{"serviceKey": []}, {"secretKey": []}],
                        "/recurring-dispatcher": [{"serviceKey": []}, {"secretKey": []}],
                        "/token-cancel": [], "/intake-form": [{"userToken": []}],
                        "/notifications": [{"serviceKey": []}, {"secretKey": []}],
                        "/recording-url": [{"userToken": []}],
                        "/recording-expiry": [{"serviceKey": []}, {"secretKey": []}]}
    assert served_document["paths"]["/intake-form"]["get"]["security"] == [{"userToken": []}]
    schemes = served_document["components"]["securitySchemes"]
    assert {name: (scheme["type"], scheme.get("scheme") or scheme.get("in"), scheme.get("bearerFormat") or scheme["name"])
            for name, scheme in schemes.items()} == {
        "userToken": ("http", "bearer", "JWT"), "serviceKey": ("http", "bearer", "JWT"),
        "secretKey": ("apiKey", "header", "apikey")}
