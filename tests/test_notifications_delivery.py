"""Sending: never missed, never twice. Two runs at once, an SMTP server that is
down and comes back, refusals (permanent and temporary), a cancellation between
claim and send, a crash between sending and recording, email switched off, and
the settings it reads. Every message is counted where it arrives: the real SMTP
server of tests/smtp_server.py.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import timedelta

import psycopg
import pytest

from shared import db, notifications
from shared.notifications import outbox
from shared.notifications.smtp import Mailer, parse_smtp_url
from shared.ops import practice_settings
from shared.ops.serve import health
from shared.settings import SettingsError
from tests.notifications_fixtures import EMAIL_FROM, MailEnv, send_due
from tests.smtp_server import SmtpTestServer
from tests.support import Person, create_person
from tests.test_notifications import insert_session


@pytest.fixture
def pair(committed_db: psycopg.Connection) -> tuple[Person, Person]:
    """A specialist and a client (committed)."""
    return (create_person(committed_db, "specialist", full_name="Dr Sam Stone"),
            create_person(committed_db, "client", full_name="Cleo Client"))


def many_sessions(conn: psycopg.Connection, specialist: Person, client: Person, count: int) -> None:
    """`count` confirmed sessions of one pair, an hour apart, in one statement: 2 × count confirmations."""
    conn.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           select %(s)s, %(c)s, date_trunc('hour', now()) + make_interval(days => 2, hours => i),
                  date_trunc('hour', now()) + make_interval(days => 2, hours => i, mins => 50)
           from generate_series(1, %(n)s) i""",
        {"s": specialist.id, "c": client.id, "n": count})


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    return {r["status"]: r["n"] for r in conn.execute(
        "select status, count(*) as n from private.email_outbox group by status")}


def make_all_due(conn: psycopg.Connection) -> None:
    """Time passes: every backoff and lease is over."""
    conn.execute("update private.email_outbox set next_attempt_at = now() where status = 'pending'")


def test_two_runs_at_once_over_a_thousand_due_messages_send_each_exactly_once(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    many_sessions(committed_db, *pair, 500)
    assert statuses(committed_db) == {"pending": 1000}
    start = threading.Barrier(2)
    results: list[dict] = []
    errors: list[BaseException] = []

    def one_run() -> None:
        try:
            start.wait()
            results.append(notifications.run(batch_size=25))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)

    assert errors == []
    received = mail_env.server.messages()
    counts = Counter(r.message_id for r in received)
    assert len(received) == 1000 and len(counts) == 1000, "each message once"
    assert sorted(r["sent"] for r in results) != [0, 1000], "both runs took a share"
    assert sum(r["sent"] for r in results) == 1000
    assert statuses(committed_db) == {"sent": 1000}


def test_smtp_down_then_back_every_message_arrives_once(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    many_sessions(committed_db, *pair, 30)
    mail_env.server.stop()

    down = notifications.run(batch_size=20)

    assert (down["sent"], down["retrying"]) == (0, 20), "the first failure stops the run; its batch waits"
    rows = committed_db.execute("select attempts, last_error, next_attempt_at > now() as later "
                                "from private.email_outbox where attempts > 0").fetchall()
    assert len(rows) == 20 and all(r["later"] for r in rows)
    assert {r["last_error"].split(":")[0] for r in rows} == {
        "SMTP server unavailable", "Not tried"}
    assert notifications.run()["sent"] == 0, "nothing is due before its backoff"

    mail_env.server.start()
    make_all_due(committed_db)
    back = notifications.run(batch_size=20)

    assert back["sent"] == 60
    counts = Counter(r.message_id for r in mail_env.server.messages())
    assert len(counts) == 60 and set(counts.values()) == {1}
    assert statuses(committed_db) == {"sent": 60}


def test_a_permanent_refusal_stops_and_is_visible_a_temporary_one_is_retried(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    specialist, client = pair
    many_sessions(committed_db, specialist, client, 1)
    mail_env.server.refuse.add(client.email)

    first = notifications.run()

    assert (first["sent"], first["failed"]) == (1, 1)
    failed = committed_db.execute("select * from private.email_outbox where status = 'failed'").fetchone()
    assert failed["recipient_id"] == client.id
    assert failed["last_error"] == "Refused by the SMTP server: 550 5.1.1 No such mailbox"
    make_all_due(committed_db)
    assert notifications.run()["sent"] == 0, "a refused message is never tried again"
    assert health()[0]["email_refused_7d"] == 1

    mail_env.server.refuse.clear()
    mail_env.server.defer = True
    many_sessions_later = committed_db.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           values (%s, %s, now() + interval '9 days', now() + interval '9 days 50 minutes') returning id""",
        [specialist.id, client.id]).fetchone()["id"]
    deferred = notifications.run()
    assert (deferred["sent"], deferred["retrying"]) == (0, 2)
    assert {r["last_error"] for r in committed_db.execute(
        "select last_error from private.email_outbox where session_id = %s", [many_sessions_later])} == {
        "Deferred by the SMTP server: 451 4.3.0 Mailbox busy, try again later"}

    mail_env.server.defer = False
    make_all_due(committed_db)
    assert notifications.run()["sent"] == 2
    assert len(mail_env.server.messages()) == 3


def test_a_refused_sender_is_our_configuration_so_messages_wait_instead_of_failing(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    many_sessions(committed_db, *pair, 1)
    mail_env.server.refuse_sender = True

    result = notifications.run()

    assert (result["sent"], result["failed"], result["retrying"]) == (0, 0, 2)
    assert statuses(committed_db) == {"pending": 2}
    mail_env.server.refuse_sender = False
    make_all_due(committed_db)
    assert notifications.run()["sent"] == 2


def test_a_reminder_claimed_then_cancelled_before_sending_is_not_sent(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    specialist, client = pair
    session = insert_session(committed_db, specialist.id, client.id, starts_in=timedelta(minutes=10),
                             created_ago=timedelta(days=2))
    committed_db.execute("update private.email_outbox set status = 'sent'")
    with db.transaction() as conn:
        assert outbox.queue_due_reminders(conn) == 1
        (claimed,) = outbox.claim(conn, 10)
    assert claimed.message.kind == "reminder"

    committed_db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
                         [session["id"], client.id])
    with Mailer(parse_smtp_url(mail_env.server.url)) as mailer:
        totals = {"sent": 0, "retrying": 0, "failed": 0, "skipped": 0}
        notifications.send_batch(mailer, EMAIL_FROM, [claimed], totals)

    assert totals == {"sent": 0, "retrying": 0, "failed": 0, "skipped": 1}
    assert mail_env.server.messages() == []
    row = committed_db.execute("select status, last_error from private.email_outbox where id = %s",
                               [claimed.message.id]).fetchone()
    assert (row["status"], row["last_error"]) == ("skipped", "The session was cancelled.")
    assert notifications.run()["sent"] == 2, "the cancellation notices still go"


def test_a_crash_between_sending_and_recording_repeats_the_same_message(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair, monkeypatch) -> None:
    specialist, client = pair
    many_sessions(committed_db, specialist, client, 1)

    def crash(conn, outbox_id):
        raise RuntimeError("the function died after the server accepted the message")

    monkeypatch.setattr(outbox, "record_sent", crash)
    with pytest.raises(RuntimeError):
        notifications.run()
    monkeypatch.undo()
    assert statuses(committed_db) == {"pending": 2}, "nothing was recorded"
    make_all_due(committed_db)  # the lease of the dead run is over

    assert notifications.run()["sent"] == 2

    received = mail_env.server.messages()
    assert len(received) == 3, "the message that was in flight arrives again"
    counts = Counter(r.message_id for r in received)
    assert sorted(counts.values()) == [1, 2], "as the same message: one Message-ID"
    repeated = next(mid for mid, n in counts.items() if n == 2)
    first_id = committed_db.execute("select min(id) as id from private.email_outbox").fetchone()["id"]
    assert repeated == f"<notification-{first_id}@calm-practice.test>"


def test_a_message_that_cannot_be_composed_is_retried_and_does_not_stop_the_others(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair, monkeypatch) -> None:
    specialist, client = pair
    many_sessions(committed_db, specialist, client, 2)
    poison = committed_db.execute("select min(id) as id from private.email_outbox").fetchone()["id"]
    real_compose = notifications.compose

    def compose(message, email_from):
        if message.id == poison:
            raise KeyError("a template variable")
        return real_compose(message, email_from)

    monkeypatch.setattr(notifications, "compose", compose)
    result = notifications.run()

    assert (result["sent"], result["retrying"]) == (3, 1)
    row = committed_db.execute("select status, last_error from private.email_outbox where id = %s",
                               [poison]).fetchone()
    assert (row["status"], row["last_error"]) == ("pending", "KeyError: 'a template variable'")


def test_a_message_whose_session_is_missing_is_skipped_not_claimed_forever(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    specialist, client = pair
    committed_db.execute(
        """insert into private.email_outbox (kind, session_id, recipient_id, for_starts_at)
           values ('booking_confirmed', gen_random_uuid(), %s, now() + interval '1 day')""", [client.id])

    assert notifications.run()["sent"] == 0
    assert committed_db.execute("select status, last_error from private.email_outbox").fetchone() == {
        "status": "skipped", "last_error": "The session does not exist."}


def test_email_off_is_said_once_and_messages_wait(
        mail_env: MailEnv, notifications_app, committed_db: psycopg.Connection, pair, caplog) -> None:
    mail_env.functions.set(SMTP_URL=None)
    many_sessions(committed_db, *pair, 2)

    with caplog.at_level(logging.WARNING, logger="functions"):
        answers = [send_due(notifications_app) for _ in range(3)]

    assert all(a["email"] == "off" and a["sent"] == 0 for a in answers)
    said = [r.getMessage() for r in caplog.records if "Email is off" in r.getMessage()]
    assert said == ["Email is off (SMTP_URL not set): messages stay queued in private.email_outbox until it is on"]
    assert statuses(committed_db) == {"pending": 4}
    report, status = health()
    assert (report["email"], report["email_backlog"], status) == ("disabled", 4, 200)
    assert report["email_oldest_unsent_at"] is not None

    mail_env.functions.set(SMTP_URL=mail_env.server.url)
    assert send_due(notifications_app)["sent"] == 4
    assert health()[0]["email_backlog"] == 0


def test_implicit_tls_smtps_delivers(mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    server = SmtpTestServer(implicit_tls=True).start()
    try:
        mail_env.functions.set(SMTP_URL=server.url, SSL_CERT_FILE=str(server.cert_file))
        many_sessions(committed_db, *pair, 1)
        assert notifications.run()["sent"] == 2
        assert len(server.messages()) == 2
    finally:
        server.stop()


def test_an_untrusted_certificate_is_refused_and_retried_later(
        mail_env: MailEnv, committed_db: psycopg.Connection, pair) -> None:
    mail_env.functions.set(SSL_CERT_FILE=None)
    many_sessions(committed_db, *pair, 1)
    result = notifications.run()
    assert (result["sent"], result["retrying"]) == (0, 2)
    assert "CERTIFICATE_VERIFY_FAILED" in committed_db.execute(
        "select last_error from private.email_outbox order by id limit 1").fetchone()["last_error"]


@pytest.mark.parametrize(("url", "message"), [
    ("http://mail.example.com", "SMTP_URL must start with smtp:// (STARTTLS) or smtps:// (TLS), got 'http'"),
    ("smtp://", "SMTP_URL has no host (smtp://user:pass@host:587)"),
    ("smtp://user@mail.example.com:587", "SMTP_URL must carry both a user and a password, or neither"),
    ("smtp://u:p@mail.example.com:99999", "SMTP_URL is not a valid URL (smtp://user:pass@host:587)"),
])
def test_a_malformed_smtp_url_is_named_without_its_password(url: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_smtp_url(url)
    assert str(raised.value) == message


def test_smtp_url_defaults_and_percent_encoded_credentials() -> None:
    assert parse_smtp_url("smtp://a%40b:p%3Aw%2F@mail.example.com") == parse_smtp_url(
        "smtp://a%40b:p%3Aw%2F@mail.example.com:587")
    server = parse_smtp_url("smtps://a%40b:p%3Aw%2F@mail.example.com")
    assert (server.port, server.username, server.password) == (465, "a@b", "p:w/")
    assert "p:w/" not in repr(server)


def test_reminder_offsets_are_a_practice_setting(db) -> None:
    assert practice_settings.apply(db, {"REMINDER_OFFSETS_MINUTES": "60, 10"}) == {
        "reminder_offsets_minutes": "{60,10}"}
    assert db.execute("select (private.practice_settings()).reminder_offsets_minutes as o").fetchone()["o"] == [60, 10]
    with pytest.raises(practice_settings.PracticeSettingsError,
                       match="REMINDER_OFFSETS_MINUTES='0' is out of range for reminder_offsets_minutes"):
        practice_settings.apply(db, {"REMINDER_OFFSETS_MINUTES": "0"})


def test_the_settings_command_prints_the_offsets_as_they_are_written(database_url, capsys) -> None:
    from shared.ops.cli import main as cli

    assert cli(["--database-url", database_url, "settings"]) == 0
    assert "REMINDER_OFFSETS_MINUTES=1440,120,15" in capsys.readouterr().out.splitlines()


def test_the_job_runs_every_minute_through_call_function(pg_cron, db) -> None:
    job = db.execute("select schedule, command from cron.job where jobname = 'notifications'").fetchone()
    assert job == {"schedule": "* * * * *", "command": "select private.call_function('notifications')"}


def test_the_claim_is_an_index_scan(db) -> None:
    db.execute("set local enable_seqscan = off")  # the tiny test table would otherwise be scanned
    plan = "\n".join(r["QUERY PLAN"] for r in db.execute(
        "explain " + outbox.CLAIM_QUERY, {"limit": 100, "lease": outbox.LEASE}))
    assert "email_outbox_due_idx" in plan
