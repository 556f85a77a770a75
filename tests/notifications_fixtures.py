"""Pytest fixtures for email (a plugin, registered in conftest's ``pytest_plugins``).

- ``smtp_server``: the real SMTP server of tests/smtp_server.py (STARTTLS, AUTH), once per run;
- ``mailbox``: that server, running and emptied, for one test;
- ``mail_env``: the functions' settings (functions_env) plus SMTP_URL, EMAIL_FROM and
  the test certificate trusted, with the outbox emptied around the test;
- ``notifications_app``: the notifications function's functions-framework app;
  ``send_due(app)`` runs it as the scheduler does and returns its answer;
- helpers to read a received email: its text, HTML and parsed ``.ics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import functions_framework
import icalendar
import psycopg
import pytest

from shared import notifications
from tests.functions_fixtures import REPO_ROOT, FunctionsEnv, service_bearer
from tests.smtp_server import Received, SmtpTestServer

EMAIL_FROM = "Calm Practice <bookings@calm-practice.test>"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpTestServer]:
    server = SmtpTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mailbox(smtp_server: SmtpTestServer) -> Iterator[SmtpTestServer]:
    if smtp_server._controller is None:
        smtp_server.start()
    smtp_server.clear()
    try:
        yield smtp_server
    finally:
        if smtp_server._controller is None:
            smtp_server.start()
        smtp_server.clear()


def empty_outbox(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("truncate private.email_outbox")


@dataclass
class MailEnv:
    functions: FunctionsEnv
    server: SmtpTestServer
    email_from: str = EMAIL_FROM


@pytest.fixture
def mail_env(functions_env: FunctionsEnv, mailbox: SmtpTestServer) -> Iterator[MailEnv]:
    functions_env.set(SMTP_URL=mailbox.url, EMAIL_FROM=EMAIL_FROM, SSL_CERT_FILE=str(mailbox.cert_file))
    notifications._off_announced.clear()
    empty_outbox(functions_env.database_url)
    try:
        yield MailEnv(functions_env, mailbox)
    finally:
        empty_outbox(functions_env.database_url)


@pytest.fixture(scope="session")
def _notifications_flask_app() -> Any:
    return functions_framework.create_app("notifications_run", str(REPO_ROOT / "functions/notifications/main.py"))


@pytest.fixture
def notifications_app(_notifications_flask_app: Any, mail_env: MailEnv) -> Any:
    return _notifications_flask_app.test_client()


def send_due(app: Any) -> dict:
    """One run of the notifications function, called with the service key as pg_cron does."""
    response = app.post("/", json={}, headers=service_bearer())
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# -- reading what arrived ---------------------------------------------------------

def subject_of(received: Received) -> str:
    # A long subject is folded on the wire right after "Subject:"; unfolded it keeps that space.
    return str(received.message["Subject"]).strip()


def text_of(received: Received) -> str:
    return received.message.get_body(("plain",)).get_content()


def html_of(received: Received) -> str:
    return received.message.get_body(("html",)).get_content()


def invitation_of(received: Received) -> icalendar.Calendar | None:
    for part in received.message.iter_attachments():
        if part.get_content_type() == "text/calendar":
            content = part.get_content()
            return icalendar.Calendar.from_ical(content.encode() if isinstance(content, str) else content)
    return None


def event_of(calendar: icalendar.Calendar) -> icalendar.Event:
    (event,) = calendar.walk("VEVENT")
    return event


def to(received: list[Received], address: str) -> list[Received]:
    return [r for r in received if r.rcpt_tos == (address,)]
