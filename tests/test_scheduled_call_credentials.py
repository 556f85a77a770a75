"""Scheduled calls and the service key (sql/0036_scheduled_call_credentials.sql): the
plain-PostgreSQL `net.http_post` stand-in sends credentials but never stores them, never
follows a redirect with them (a 3xx is the outcome, as with pg_net), and
`private.call_function` sends a secret key (`sb_secret_…`) in `apikey`, a legacy
service-role JWT as `Authorization: Bearer`.

The calls go from the database server to a small HTTP server in this process.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest

from tests.rls_fixtures import database_text_containing

SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.a-legacy-service-key-signature"
SECRET_KEY = "sb_secret_scheduled-call-test-key-0123456789"


@dataclass
class Recorder:
    """A local HTTP server that records every request and answers as told."""

    server: http.server.ThreadingHTTPServer
    requests: list[dict] = field(default_factory=list)
    answer_status: int = 200
    answer_headers: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _recorder() -> Recorder:
    recorder: Recorder

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorder.requests.append({"method": self.command, "path": self.path,
                                      "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "body": self.rfile.read(length)})
            self.send_response(recorder.answer_status)
            for name, value in recorder.answer_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST = _handle

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder = Recorder(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return recorder


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    first, second = _recorder(), _recorder()
    try:
        yield first, second
    finally:
        first.server.shutdown()
        second.server.shutdown()


@pytest.fixture
def stand_in(db: psycopg.Connection) -> psycopg.Connection:
    language = db.execute("""select l.lanname from pg_proc p join pg_language l on l.oid = p.prolang
                             where p.oid = 'net.http_post(text,jsonb,jsonb,jsonb,integer)'::regprocedure""").fetchone()
    assert language == {"lanname": "plpython3u"}, "these tests are about the plain-PostgreSQL stand-in"
    return db


def _post(conn: psycopg.Connection, url: str, headers: dict) -> int:
    return conn.execute("select net.http_post(%s, '{}'::jsonb, '{}'::jsonb, %s::jsonb, 5000) as id",
                        [url, json.dumps(headers)]).fetchone()["id"]


def test_the_authorization_header_is_sent_but_never_stored(stand_in, recorders) -> None:
    target, _ = recorders

    request_id = _post(stand_in, f"{target.url}/calendar-sync",
                       {"Content-Type": "application/json", "Authorization": f"Bearer {SERVICE_KEY}",
                        "apikey": SECRET_KEY})

    [sent] = target.requests
    assert sent["headers"]["authorization"] == f"Bearer {SERVICE_KEY}" and sent["headers"]["apikey"] == SECRET_KEY
    stored = stand_in.execute("select headers from net.http_request_queue where id = %s", [request_id]).fetchone()
    assert stored["headers"] == {"Content-Type": "application/json", "Authorization": "[redacted]",
                                 "apikey": "[redacted]"}
    assert database_text_containing(stand_in, SERVICE_KEY) == []
    assert database_text_containing(stand_in, SECRET_KEY) == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_the_outcome_and_the_key_never_reaches_its_target(status: int, stand_in, recorders) -> None:
    target, elsewhere = recorders
    target.answer_status, target.answer_headers = status, {"Location": f"{elsewhere.url}/steal"}

    request_id = _post(stand_in, f"{target.url}/calendar-sync", {"Authorization": f"Bearer {SERVICE_KEY}"})

    assert len(target.requests) == 1
    assert elsewhere.requests == [], "the redirect was followed"
    result = stand_in.execute("select status_code, failed, error_msg from private.scheduled_call_results where id = %s",
                              [request_id]).fetchone()
    assert result == {"status_code": status, "failed": True,
                      "error_msg": f"Redirect ({status}) not followed: scheduled calls never re-send their credentials"}


@pytest.fixture
def vault_secrets(db: psycopg.Connection):
    def put(functions_url: str, service_key: str) -> None:
        db.execute("delete from vault.secrets where name in ('functions_url', 'service_role_key')")
        db.execute("select vault.create_secret(%s, 'functions_url')", [functions_url])
        db.execute("select vault.create_secret(%s, 'service_role_key')", [service_key])
    return put


@pytest.mark.parametrize("key, expected", [
    (SECRET_KEY, {"apikey": SECRET_KEY, "authorization": None}),
    (SERVICE_KEY, {"apikey": None, "authorization": f"Bearer {SERVICE_KEY}"}),
], ids=["secret key in apikey", "legacy JWT as Bearer"])
def test_call_function_sends_each_kind_of_service_key_where_it_belongs(
        key: str, expected: dict, stand_in, recorders, vault_secrets) -> None:
    target, _ = recorders
    vault_secrets(target.url, key)

    stand_in.execute("select private.call_function('calendar-sync')")

    [sent] = target.requests
    assert sent["path"] == "/calendar-sync"
    assert {name: sent["headers"].get(name) for name in expected} == expected
