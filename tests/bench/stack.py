"""What the function benchmarks run against: a throwaway migrated cluster, the
local Calendar API and Storage servers, and every function served in a gunicorn subprocess."""

from __future__ import annotations

import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from shared.ops.localpg import LocalCluster, free_port
from shared.ops.migrate import migrate
from tests.calendar_server import FakeCalendarServer
from tests.functions_fixtures import ServedFunctions, served_environment
from tests.storage_fixtures import storage_environment
from tests.storage_server import FakeStorageServer


@dataclass(frozen=True)
class Stack:
    database_url: str
    calendar: FakeCalendarServer
    served: ServedFunctions
    jwt_secret: str
    storage: FakeStorageServer | None = None


@contextmanager
def served_stack(threads: int) -> Iterator[Stack]:
    """Starts everything, yields it, and tears it all down again."""
    jwt_secret = "bench-jwt-secret-" + uuid.uuid4().hex
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="therapy-bench-pg-")), fast=True)
    calendar = FakeCalendarServer()
    storage = FakeStorageServer(jwt_secret=jwt_secret).start()
    served = None
    try:
        cluster.init()
        cluster.start()
        url = cluster.url()
        migrate(url, log=lambda _line: None)
        calendar.start()
        port = free_port()
        served = ServedFunctions(port, served_environment(
            database_url=url, public_url=f"http://127.0.0.1:{port}/functions/v1",
            calendar_api_url=calendar.api_url, service_account=calendar.make_service_account(),
            jwt_secret=jwt_secret, link_secret="bench-link-secret-" + uuid.uuid4().hex,
            GOOGLE_CALENDAR_TIMEOUT_SECONDS="10", GOOGLE_CALENDAR_NUM_RETRIES="3",
            **storage_environment(storage, jwt_secret),
        ), threads=threads).start()
        yield Stack(url, calendar, served, jwt_secret, storage)
    finally:
        if served is not None:
            served.stop()
        calendar.stop()
        storage.stop()
        cluster.destroy()
