"""Pytest fixtures for Supabase Storage (a plugin, registered in conftest's ``pytest_plugins``).

- ``storage_server_session``: the fake Storage (tests/storage_server.py), one per run;
  the served functions and ``functions_env`` point SUPABASE_URL at it;
- ``storage``: that server emptied for this test, with the recordings bucket's name;
- ``recording``: inserts (committed) a recording row for a session and puts its object.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from tests.storage_server import FakeStorageServer

BUCKET = "meeting-recordings"
STORAGE_SECRET_KEY = "sb_secret_test0123456789abcdefghijklmnop"
# The legacy service-role key as Supabase makes it (HS256 with the project secret), valid for years.
_SERVICE_KEY_YEARS = 10


def legacy_service_key(jwt_secret: str) -> str:
    from tests.functions_fixtures import service_token
    return service_token(secret=jwt_secret, expires_in=_SERVICE_KEY_YEARS * 365 * 24 * 3600)


def storage_environment(server: FakeStorageServer, jwt_secret: str) -> dict[str, str]:
    """The settings that point the functions at `server` with the legacy service key."""
    return {"SUPABASE_URL": server.url, "SUPABASE_SERVICE_ROLE_KEY": legacy_service_key(jwt_secret),
            "RECORDINGS_BUCKET": BUCKET}


@pytest.fixture(scope="session")
def storage_server_session() -> Iterator[FakeStorageServer]:
    from tests.functions_fixtures import JWT_SECRET
    server = FakeStorageServer(jwt_secret=JWT_SECRET, secret_key=STORAGE_SECRET_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def storage(storage_server_session: FakeStorageServer, functions_env) -> Iterator[FakeStorageServer]:
    """The fake Storage, empty, for this test (the functions already point at it)."""
    storage_server_session.reset()
    try:
        yield storage_server_session
    finally:
        storage_server_session.reset()


def recording_path(session: dict[str, Any], name: str = "recording.mp4") -> str:
    """Where the recording of `session` sits: sessions/<yyyy-mm of its start, UTC>/<session id>/<name>."""
    month = session["starts_at"].astimezone(timezone.utc).strftime("%Y-%m")
    return f"sessions/{month}/{session['id']}/{name}"


@pytest.fixture
def recording(committed_db: psycopg.Connection, storage: FakeStorageServer) -> Callable[..., dict]:
    """`recording(session, expires_in=…, name=…, with_object=True)`: a committed recording row (and its object)."""
    def make(session: dict[str, Any], *, expires_in: timedelta | None = None, name: str | None = None,
             with_object: bool = True, created_ago: timedelta = timedelta(0)) -> dict:
        path = recording_path(session, name or f"{uuid.uuid4().hex[:8]}.mp4")
        created_at = datetime.now(timezone.utc) - created_ago
        expires_at = None if expires_in is None else datetime.now(timezone.utc) + expires_in
        row = committed_db.execute(
            """insert into public.meeting_recordings (booking_id, storage_path, file_format, duration_seconds,
                                                      created_at, expires_at)
               values (%s, %s, 'mp4', 3000, %s, %s) returning *""",
            [session["id"], path, created_at, expires_at]).fetchone()
        if with_object:
            storage.put(BUCKET, path)
        return row
    return make
