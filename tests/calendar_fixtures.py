"""Pytest fixtures for code that talks to Google Calendar (a plugin: register with
`pytest_plugins = ["tests.calendar_fixtures"]`).

- `calendar_server`: the fake Calendar API (one per run), emptied before and after each test;
- `calendar_env`: the settings and gateway pointed at it, with a 0.5 s client timeout
  and retry backoff that records instead of sleeping;
- `calendar_disabled`: no service account, so calendar sync is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterator

import google.auth.credentials
import pytest

import shared.calendar
from shared.calendar import reset_gateway
from shared.settings import reset_settings
from tests.calendar_server import FakeCalendarServer

CLIENT_TIMEOUT_SECONDS = 0.5
NUM_RETRIES = 3
_CALENDAR_VARIABLES = (
    "GOOGLE_CALENDAR_API_URL",
    "GOOGLE_SERVICE_ACCOUNT_JSON",
    "GOOGLE_CALENDAR_DELEGATE",
    "GOOGLE_CALENDAR_TIMEOUT_SECONDS",
    "GOOGLE_CALENDAR_NUM_RETRIES",
)


@dataclass
class CalendarEnv:
    """What a calendar test needs at hand."""

    server: FakeCalendarServer
    service_account: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch
    # Each retry backoff the gateway asked for, in seconds (nothing actually sleeps).
    backoff_sleeps: list[float] = field(default_factory=list)

    def set(self, **variables: str | None) -> None:
        """Change calendar environment variables for this test and re-read settings."""
        for name, value in variables.items():
            if value is None:
                self.monkeypatch.delenv(name, raising=False)
            else:
                self.monkeypatch.setenv(name, value)
        _reset_calendar_state()


def _keep_google_auth_offline(patch: pytest.MonkeyPatch) -> None:
    # After each token refresh google-auth (2.5x+) looks up the service account's
    # "regional access boundary" at iamcredentials.googleapis.com from a background
    # thread. Tests must not reach the internet, and that stray thread would race
    # with the fake server's request log, so the lookup is switched off here.
    patch.setattr(
        google.auth.credentials.CredentialsWithRegionalAccessBoundary,
        "_is_regional_access_boundary_lookup_required",
        lambda self: False,
        raising=False,
    )


def _reset_calendar_state() -> None:
    reset_settings()
    reset_gateway()


@pytest.fixture(scope="session")
def calendar_server_session() -> Iterator[FakeCalendarServer]:
    """The fake Calendar API server, started once per test run."""
    with FakeCalendarServer() as server:
        yield server


@pytest.fixture(scope="session")
def calendar_service_account(calendar_server_session: FakeCalendarServer) -> dict[str, Any]:
    """A service-account key the fake server trusts (RSA generation is slow-ish, so once per run)."""
    return calendar_server_session.make_service_account()


@pytest.fixture
def calendar_server(calendar_server_session: FakeCalendarServer) -> Iterator[FakeCalendarServer]:
    """The fake Calendar API with no events, requests or injected failures."""
    calendar_server_session.reset()
    yield calendar_server_session
    calendar_server_session.reset()


@pytest.fixture
def calendar_env(
    calendar_server: FakeCalendarServer, calendar_service_account: dict[str, Any]
) -> Iterator[CalendarEnv]:
    """Settings and gateway pointed at the fake server, fresh for this test."""
    # Our own MonkeyPatch so the environment is restored *before* the caches are
    # cleared; with the shared `monkeypatch` fixture the order would be reversed.
    with pytest.MonkeyPatch.context() as patch:
        env = CalendarEnv(calendar_server, calendar_service_account, patch)
        patch.setenv("GOOGLE_CALENDAR_API_URL", calendar_server.api_url)
        patch.setenv("GOOGLE_SERVICE_ACCOUNT_JSON", json.dumps(calendar_service_account))
        patch.setenv("GOOGLE_CALENDAR_TIMEOUT_SECONDS", str(CLIENT_TIMEOUT_SECONDS))
        patch.setenv("GOOGLE_CALENDAR_NUM_RETRIES", str(NUM_RETRIES))
        patch.delenv("GOOGLE_CALENDAR_DELEGATE", raising=False)
        patch.setattr(shared.calendar, "backoff_sleep", env.backoff_sleeps.append)
        _keep_google_auth_offline(patch)
        _reset_calendar_state()
        try:
            yield env
        finally:
            patch.undo()
            _reset_calendar_state()


@pytest.fixture
def calendar_disabled() -> Iterator[None]:
    """No service account configured: calendar sync is off for this test."""
    with pytest.MonkeyPatch.context() as patch:
        for name in _CALENDAR_VARIABLES:
            patch.delenv(name, raising=False)
        _reset_calendar_state()
        try:
            yield
        finally:
            patch.undo()
            _reset_calendar_state()
