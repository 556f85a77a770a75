"""Pytest fixtures for calling the functions over HTTP (a plugin, registered in
conftest's ``pytest_plugins``).

- ``functions_env``: the settings the functions read (database, JWT secret, link
  secret and base URL, and the calendar of ``calendar_env``), with every process-wide
  cache (settings, pool, calendar gateway, JWKS clients) dropped around each test;
- ``user_token()`` / ``bearer()`` (helpers): Supabase-style user JWTs, signed with the test secret;
  ``service_token()`` / ``service_bearer()``: the service key as the scheduler sends it;
- ``booking_app`` / ``token_cancel_app``: Flask test clients of the apps that
  ``functions_framework.create_app`` builds (what ``functions-framework --source
  --target`` serves);
- ``served_functions``: every function served by ``shared.ops.serve`` in a gunicorn
  subprocess with the same settings, once per run (``serve_functions(**settings)``
  starts one with other settings);
- ``functions_api``: the functions (booking-create, token-cancel, booking-cancel,
  calendar-sync) through one door, parametrized so that a test
  runs through functions-framework's app and through the served process
  (``booking_api``, ``token_cancel_api``, ``booking_cancel_api``, ``calendar_sync_api``
  are its parts);
- ``bookable_specialist``: a committed specialist with a current rate and weekly hours;
- ``booked_session``: a committed confirmed session with its event on the fake Calendar API.
"""

from __future__ import annotations

import http.client
import socket
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time as clock, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import functions_framework
import jwt
import psycopg
import pytest
from psycopg import sql

from shared import calendar, db
from shared.ops import practice_settings
from shared.auth import reset_auth_caches
from shared.ops.localpg import free_port
from shared.settings import reset_settings
from shared.storage.client import reset_bucket
from tests.calendar_fixtures import CalendarEnv
from tests.calendar_server import FakeCalendarServer
from tests.storage_fixtures import storage_environment
from tests.storage_server import FakeStorageServer
from tests.support import Person, create_person

REPO_ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "functions-test-jwt-secret-with-at-least-32-characters-0123456789"
LINK_SECRET = "functions-test-cancellation-link-secret-0123456789abcdef"
CALENDAR_TIMEOUT_SECONDS = "0.5"
# One retry: retrying is exercised, and a stalled calendar costs two client timeouts, not four.
CALENDAR_NUM_RETRIES = "1"
SERVER_START_SECONDS = 60
# The intake forms' key ring in tests: version 1 only (tests that rotate set their own).
INTAKE_KEY_1 = "bfOTiYpJ3W7BsIjmmV3aCjMrc9Qm1RSJ3R0QF1D1xEg="
INTAKE_KEYS = f"1:{INTAKE_KEY_1}"

# Settings that must not leak in from the developer's shell.
_UNSET = ("TRUSTED_PROXY_HOPS", "SUPABASE_JWKS_URL", "SUPABASE_SECRET_KEY", "SUPABASE_JWT_ISSUER", "SENTRY_DSN",
          "GOOGLE_CALENDAR_DELEGATE")


# -- tokens ------------------------------------------------------------------------

def user_token(who: Person | uuid.UUID, *, secret: str = JWT_SECRET, expires_in: int = 3600,
               **claims: Any) -> str:
    """A user's access token as Supabase Auth issues it (HS256 with the project secret)."""
    user_id = who.id if isinstance(who, Person) else who
    now = int(time.time())
    payload = {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": "authenticated",
        "email": who.email if isinstance(who, Person) else f"{user_id.hex[:8]}@example.test",
        "iat": now,
        "exp": now + expires_in,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def bearer(who: Person | uuid.UUID, **token_options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {user_token(who, **token_options)}"}


def service_token(*, secret: str = JWT_SECRET, role: str = "service_role", expires_in: int = 3600,
                  **claims: Any) -> str:
    """The project's service key (or, with role="anon", its anon key) as Supabase makes it:
    HS256 with the project secret, claims iss, role, iat, exp and no sub or aud."""
    now = int(time.time())
    return jwt.encode({"iss": "supabase", "role": role, "iat": now, "exp": now + expires_in, **claims},
                      secret, algorithm="HS256")


def service_bearer(**token_options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {service_token(**token_options)}"}


# -- settings ----------------------------------------------------------------------

def _clear_caches() -> None:
    reset_settings()
    db.close_pool()
    calendar.reset_gateway()
    reset_auth_caches()
    reset_bucket()


def _clear_private_state(database_url: str) -> None:
    """Tables committed_db does not empty: link-failure counts and the calendar deletion queue."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("truncate private.cancel_link_failures, private.calendar_deletions, private.email_outbox, "
                     "private.calendar_patches")


@pytest.fixture(scope="session")
def functions_port() -> int:
    """The port the served functions listen on; links point there from every test."""
    return free_port()


@pytest.fixture(scope="session")
def functions_base_url(functions_port: int) -> str:
    """PUBLIC_FUNCTIONS_URL: the served process's /functions/v1."""
    return f"http://127.0.0.1:{functions_port}/functions/v1"


@dataclass
class FunctionsEnv:
    calendar: CalendarEnv
    database_url: str
    base_url: str
    monkeypatch: pytest.MonkeyPatch

    @property
    def server(self) -> FakeCalendarServer:
        return self.calendar.server

    def set(self, **variables: str | None) -> None:
        """Change settings for the rest of this test (in this process, or the database's
        practice settings) and drop the caches."""
        for name, value in use_practice_settings(self.database_url, variables).items():
            if value is None:
                self.monkeypatch.delenv(name, raising=False)
            else:
                self.monkeypatch.setenv(name, value)
        _clear_caches()


@pytest.fixture
def functions_env(calendar_env: CalendarEnv, database_url: str, functions_base_url: str,
                  storage_server_session: FakeStorageServer) -> Iterator[FunctionsEnv]:
    """Everything the functions read from their environment, pointed at the test database,
    the fake Calendar API and the fake Storage; caches are dropped before and after the test."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in storage_environment(storage_server_session, JWT_SECRET).items():
            patch.setenv(name, value)
        patch.setenv("DATABASE_URL", database_url)
        patch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
        patch.setenv("CANCELLATION_LINK_SECRET", LINK_SECRET)
        patch.setenv("PUBLIC_FUNCTIONS_URL", functions_base_url)
        patch.setenv("GOOGLE_CALENDAR_NUM_RETRIES", CALENDAR_NUM_RETRIES)
        patch.setenv("INTAKE_ENCRYPTION_KEYS", INTAKE_KEYS)
        for name in _UNSET:
            patch.delenv(name, raising=False)
        _clear_caches()
        _clear_private_state(database_url)
        practice = _practice_snapshot(database_url)
        try:
            yield FunctionsEnv(calendar_env, database_url, functions_base_url, patch)
        finally:
            db.close_pool()
            patch.undo()
            _clear_caches()
            _clear_private_state(database_url)
            _restore_practice_settings(database_url, practice)


# -- HTTP: one small client over both doors ----------------------------------------------

@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive lookups through .header()
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


Body = bytes | str | None


class FunctionClient:
    """Calls one function; ``address`` is the caller's network address as the function sees it."""

    transport: str

    def request(self, method: str, *, query: str = "", body: Body = None,
                headers: Mapping[str, str] | None = None, address: str | None = None) -> Answer:
        raise NotImplementedError

    def post_json(self, payload: Any, *, headers: Mapping[str, str] | None = None) -> Answer:
        return self.request("POST", body=json.dumps(payload),
                            headers={"Content-Type": "application/json", **(headers or {})})

    def post_form(self, fields: Mapping[str, str], *, query: str = "", address: str | None = None) -> Answer:
        return self.request("POST", query=query, body=urllib.parse.urlencode(fields),
                            headers={"Content-Type": "application/x-www-form-urlencoded"}, address=address)


class AppClient(FunctionClient):
    """Through functions-framework's Flask app and its test client (no network)."""

    transport = "app"

    def __init__(self, app: Any):
        self.test_client = app.test_client()

    def request(self, method: str, *, query: str = "", body: Body = None,
                headers: Mapping[str, str] | None = None, address: str | None = None) -> Answer:
        response = self.test_client.open(
            "/" + (f"?{query}" if query else ""), method=method, data=body, headers=dict(headers or {}),
            environ_base={"REMOTE_ADDR": address or "127.0.0.1"},
        )
        return Answer(response.status_code, dict(response.headers), response.get_data())


class ServedClient(FunctionClient):
    """Through the served process, over a real socket."""

    transport = "served"

    def __init__(self, base_url: str, name: str):
        self.url = urllib.parse.urlsplit(f"{base_url}/{name}")

    def request(self, method: str, *, query: str = "", body: Body = None,
                headers: Mapping[str, str] | None = None, address: str | None = None) -> Answer:
        headers = dict(headers or {})
        if address is not None:
            # What the platform's front end adds in front of a deployed function.
            headers["X-Forwarded-For"] = address
        connection = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=30)
        try:
            connection.request(method, self.url.path + (f"?{query}" if query else ""),
                               body=body.encode() if isinstance(body, str) else body, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()


def post_streamed(url: str, headers: Mapping[str, str], chunks: Iterable[bytes], *, chunked: bool = True) -> Answer:
    """POSTs a body (chunked, or with its Content-Length) while reading the answer, as browsers
    do: a server may answer (413) and stop reading before the body is all sent, and the answer
    must still be seen."""
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    chunks = list(chunks) if not chunked else chunks
    framing = ("Transfer-Encoding: chunked" if chunked
               else f"Content-Length: {sum(len(chunk) for chunk in chunks)}")  # type: ignore[arg-type]
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{framing}\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n")

    def send() -> None:
        try:
            sock.sendall(head.encode("latin-1"))
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and stopped reading: the answer is what counts

    sender = threading.Thread(target=send, name="post-streamed", daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        sock.close()
        sender.join(60)


def fetch(url: str, method: str = "GET", **options: Any) -> Answer:
    """Any URL of the served process (e.g. a cancel_url exactly as emailed)."""
    parts = urllib.parse.urlsplit(url)
    prefix, _, name = parts.path.rpartition("/")
    client = ServedClient(f"{parts.scheme}://{parts.netloc}{prefix}", name)
    return client.request(method, query=parts.query, **options)


# -- the functions in this process --------------------------------------------------------

def _create_app(name: str, entry_point: str) -> Any:
    return functions_framework.create_app(entry_point, str(REPO_ROOT / "functions" / name / "main.py"))


@pytest.fixture(scope="session")
def _booking_flask_app() -> Any:
    return _create_app("booking-create", "booking_create")


@pytest.fixture(scope="session")
def _token_cancel_flask_app() -> Any:
    return _create_app("token-cancel", "token_cancel")


@pytest.fixture(scope="session")
def _booking_cancel_flask_app() -> Any:
    return _create_app("booking-cancel", "booking_cancel")


@pytest.fixture(scope="session")
def _booking_reschedule_flask_app() -> Any:
    return _create_app("booking-reschedule", "booking_reschedule")


@pytest.fixture(scope="session")
def _calendar_sync_flask_app() -> Any:
    return _create_app("calendar-sync", "calendar_sync_run")


@pytest.fixture
def booking_app(_booking_flask_app: Any, functions_env: FunctionsEnv) -> Any:
    """booking-create's functions-framework app: a Flask test client."""
    return _booking_flask_app.test_client()


@pytest.fixture
def token_cancel_app(_token_cancel_flask_app: Any, functions_env: FunctionsEnv) -> Any:
    """token-cancel's functions-framework app: a Flask test client."""
    return _token_cancel_flask_app.test_client()


# -- the functions in a served process ----------------------------------------------------

# The served process runs the real server entry point; two test-only switches come first:
# google-auth's background lookup at iamcredentials.googleapis.com is off (no internet, and
# the calendar_env fixture does the same in-process), and retry backoff does not sleep.
_SERVE_PROGRAM = """
import sys
import google.auth.credentials
google.auth.credentials.CredentialsWithRegionalAccessBoundary._is_regional_access_boundary_lookup_required = (
    lambda self: False)
import shared.calendar
shared.calendar.backoff_sleep = lambda seconds: None
from shared.ops.serve import serve
serve(port=int(sys.argv[1]), threads=int(sys.argv[2]))
"""


class ServedFunctions:
    """``shared.ops.serve`` in a subprocess: start(), ``base_url``, stop()."""

    def __init__(self, port: int, environment: Mapping[str, str], threads: int = 8):
        self.port = port
        self.environment = dict(environment)
        self.threads = threads
        self.log: list[str] = []
        self._booted = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/functions/v1"

    def start(self) -> ServedFunctions:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVE_PROGRAM, str(self.port), str(self.threads)],
            cwd=REPO_ROOT, env=self.environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._drain, name="served-functions-log", daemon=True).start()
        # gunicorn prints "Booting worker" once the socket listens and the worker starts.
        if not self._booted.wait(SERVER_START_SECONDS) or self._process.poll() is not None:
            self.stop()
            raise RuntimeError("the served functions did not start:\n" + "".join(self.log[-30:]))
        health = fetch(f"{self.base_url}/health")
        if health.status != 200:
            self.stop()
            raise RuntimeError(f"the served functions are not healthy: {health.status} {health.text}")
        return self

    def _drain(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self.log.append(line)
            if "Booting worker" in line:
                self._booted.set()
        self._booted.set()  # the process ended: stop waiting

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> ServedFunctions:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def served_environment(*, database_url: str, public_url: str, calendar_api_url: str,
                       service_account: Mapping[str, Any], jwt_secret: str = JWT_SECRET,
                       link_secret: str = LINK_SECRET, **extra: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if name not in _UNSET}
    environment.update({
        "DATABASE_URL": database_url,
        "SUPABASE_JWT_SECRET": jwt_secret,
        "CANCELLATION_LINK_SECRET": link_secret,
        "PUBLIC_FUNCTIONS_URL": public_url,
        "GOOGLE_CALENDAR_API_URL": calendar_api_url,
        "GOOGLE_SERVICE_ACCOUNT_JSON": json.dumps(service_account),
        "GOOGLE_CALENDAR_TIMEOUT_SECONDS": CALENDAR_TIMEOUT_SECONDS,
        "GOOGLE_CALENDAR_NUM_RETRIES": CALENDAR_NUM_RETRIES,
        # The tests stand in for one front-end proxy: they send the caller's address as it would.
        "TRUSTED_PROXY_HOPS": "1",
        "INTAKE_ENCRYPTION_KEYS": INTAKE_KEYS,
        **extra,
    })
    return environment


@pytest.fixture(scope="session")
def serve_functions(database_url: str, functions_port: int, functions_base_url: str,
                    calendar_server_session: FakeCalendarServer,
                    calendar_service_account: dict[str, Any],
                    storage_server_session: FakeStorageServer) -> Iterator[Callable[..., ServedFunctions]]:
    """Starts (once per run and per settings) a served process; `serve()` is the standard one,
    `serve(BOOKING_MAX_ADVANCE_DAYS="400")` one with those settings on top, on its own port."""
    started: dict[tuple[tuple[str, str], ...], ServedFunctions] = {}

    def serve(**settings: str) -> ServedFunctions:
        key = tuple(sorted(settings.items()))
        if key not in started:
            port = free_port() if settings else functions_port
            public_url = f"http://127.0.0.1:{port}/functions/v1"
            environment = served_environment(
                database_url=database_url, public_url=public_url,
                calendar_api_url=calendar_server_session.api_url, service_account=calendar_service_account,
                **{**storage_environment(storage_server_session, JWT_SECRET), **settings},
            )
            started[key] = ServedFunctions(port, environment).start()
        return started[key]

    try:
        yield serve
    finally:
        for served in started.values():
            served.stop()


@pytest.fixture(scope="session")
def served_functions(serve_functions: Callable[..., ServedFunctions]) -> ServedFunctions:
    """Every function served at /functions/v1/<name> by a gunicorn subprocess, for the whole run."""
    return serve_functions()


@dataclass(frozen=True)
class FunctionsApi:
    """The functions through one door: functions-framework's app ("app") or the served process."""

    transport: str
    booking_create: FunctionClient
    token_cancel: FunctionClient
    booking_cancel: FunctionClient
    calendar_sync: FunctionClient
    booking_reschedule: FunctionClient

    def link(self, cancel_url: str) -> str:
        """The query string of a cancel_url (what a link carries, whichever door answers it)."""
        return urllib.parse.urlsplit(cancel_url).query


# Each function (in the order of FunctionsApi's fields) with the fixture of its in-process app.
FUNCTION_APPS = {
    "booking-create": "_booking_flask_app",
    "token-cancel": "_token_cancel_flask_app",
    "booking-cancel": "_booking_cancel_flask_app",
    "calendar-sync": "_calendar_sync_flask_app",
    "booking-reschedule": "_booking_reschedule_flask_app",
}


def use_practice_settings(database_url: str, settings: Mapping[str, str | None]) -> dict[str, str | None]:
    """Puts each setting where it lives: practice settings (the booking rules' numbers) into
    the database's row (functions_env restores it after the test); returns the process settings."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        names = set(practice_settings.environment_names(conn))
        practice_settings.apply(conn, {name: value or "" for name, value in settings.items() if name in names})
    return {name: value for name, value in settings.items() if name not in names}


def _practice_snapshot(database_url: str) -> dict[str, Any]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return practice_settings.current(conn)


def _restore_practice_settings(database_url: str, values: Mapping[str, Any]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("update private.practice_settings set ({}) = row({})").format(
                sql.SQL(", ").join(map(sql.Identifier, values)), sql.SQL(", ").join(sql.Placeholder() * len(values))),
            list(values.values()))


def _api(request: pytest.FixtureRequest, transport: str, functions_env: FunctionsEnv,
         settings: Mapping[str, str]) -> FunctionsApi:
    settings = use_practice_settings(functions_env.database_url, settings)
    if transport == "served":
        base_url = request.getfixturevalue("serve_functions")(**settings).base_url
        return FunctionsApi(transport, *(ServedClient(base_url, name) for name in FUNCTION_APPS))
    if settings:
        functions_env.set(**settings)
    return FunctionsApi(transport, *(AppClient(request.getfixturevalue(fixture)) for fixture in FUNCTION_APPS.values()))


@pytest.fixture(params=["app", "served"])
def functions_api(request: pytest.FixtureRequest, functions_env: FunctionsEnv) -> FunctionsApi:
    """Both functions, through functions-framework's app and (a second run) through the served process."""
    return _api(request, request.param, functions_env, {})


@pytest.fixture
def configured_functions_api(request: pytest.FixtureRequest, functions_env: FunctionsEnv) -> Callable[..., FunctionsApi]:
    """Like functions_api with extra settings: `configured_functions_api(transport, **settings)`."""
    return lambda transport, **settings: _api(request, transport, functions_env, settings)


@pytest.fixture
def booking_api(functions_api: FunctionsApi) -> FunctionClient:
    """booking-create through either door (parametrized by functions_api)."""
    return functions_api.booking_create


@pytest.fixture
def token_cancel_api(functions_api: FunctionsApi) -> FunctionClient:
    """token-cancel through either door (parametrized by functions_api)."""
    return functions_api.token_cancel


@pytest.fixture
def booking_cancel_api(functions_api: FunctionsApi) -> FunctionClient:
    """booking-cancel through either door (parametrized by functions_api)."""
    return functions_api.booking_cancel


@pytest.fixture
def calendar_sync_api(functions_api: FunctionsApi) -> FunctionClient:
    """calendar-sync (the scheduled retry job) through either door (parametrized by functions_api)."""
    return functions_api.calendar_sync


# -- people who can be booked ---------------------------------------------------------

EVERY_DAY = tuple(range(7))  # 0 = Sunday … 6 = Saturday, as in availability_windows


@dataclass(frozen=True)
class Window:
    day_of_week: int
    start: str  # "09:00"
    end: str
    is_active: bool = True


@dataclass(frozen=True)
class BookableSpecialist:
    person: Person
    full_name: str
    timezone: str
    calendar_id: str  # the Google calendar their events go to
    amount: Decimal
    currency: str
    duration_minutes: int
    windows: tuple[Window, ...] = field(default=())

    @property
    def id(self) -> uuid.UUID:
        return self.person.id

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_day(self, days_ahead: int) -> date:
        """The specialist's calendar date `days_ahead` days from today (their today)."""
        return datetime.now(self.zone).date() + timedelta(days=days_ahead)

    def at(self, day: date, local_time: str) -> datetime:
        """A wall-clock time on `day` in the specialist's timezone, as a UTC moment."""
        return datetime.combine(day, clock.fromisoformat(local_time), self.zone).astimezone(timezone.utc)

    def slot(self, days_ahead: int = 3, local_time: str = "10:00") -> datetime:
        return self.at(self.local_day(days_ahead), local_time)


def weekly(days: Iterable[int] = EVERY_DAY, start: str = "08:00", end: str = "20:00") -> list[Window]:
    return [Window(day, start, end) for day in days]


@pytest.fixture
def bookable_specialist(committed_db: psycopg.Connection) -> Callable[..., BookableSpecialist]:
    """Makes a committed specialist with a current rate and weekly hours (default: every day 08:00–20:00)."""
    def make(*, timezone: str = "Europe/London", full_name: str = "Dr Rosa Lind",
             windows: Iterable[Window] | None = None, amount: str = "95.00", currency: str = "EUR",
             duration_minutes: int = 50, calendar_id: str | None = None) -> BookableSpecialist:
        person = create_person(committed_db, "specialist", full_name=full_name, timezone=timezone)
        committed_db.execute("update public.profiles set google_calendar_id = %s where id = %s",
                             [calendar_id, person.id])
        committed_db.execute(
            """insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
               values (%s, %s, %s, %s, now() - interval '30 days')""",
            [person.id, Decimal(amount), currency, duration_minutes],
        )
        chosen = tuple(weekly() if windows is None else windows)
        for window in chosen:
            committed_db.execute(
                """insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time, is_active)
                   values (%s, %s, %s, %s, %s)""",
                [person.id, window.day_of_week, window.start, window.end, window.is_active],
            )
        return BookableSpecialist(person, full_name, timezone, calendar_id or "primary", Decimal(amount),
                                  currency, duration_minutes, chosen)
    return make


@pytest.fixture
def booked_session(committed_db: psycopg.Connection, functions_env: FunctionsEnv) -> Callable[..., dict]:
    """Inserts (as the superuser, committed) a confirmed session whose calendar event exists
    on the fake Calendar API, as booking-create leaves it; returns the session row.
    `starts_in` may be negative (a session that has started or ended)."""
    def make(specialist: BookableSpecialist, client: Person, *, starts_in: timedelta = timedelta(days=3),
             minutes: int = 50, **columns: Any) -> dict:
        session_id = uuid.uuid4()
        starts_at = (datetime.now(timezone.utc) + starts_in).replace(microsecond=0)
        values = {"id": session_id, "specialist_id": specialist.id, "client_id": client.id, "starts_at": starts_at,
                  "ends_at": starts_at + timedelta(minutes=minutes), "google_calendar_event_id": session_id.hex,
                  **columns}
        row = committed_db.execute(
            f"insert into public.sessions ({', '.join(values)}) values ({', '.join(['%s'] * len(values))}) "
            "returning *", list(values.values())).fetchone()
        functions_env.server.put_event(specialist.calendar_id, {
            "id": session_id.hex, "start": {"dateTime": row["starts_at"].isoformat()},
            "end": {"dateTime": row["ends_at"].isoformat()}})
        return row
    return make
