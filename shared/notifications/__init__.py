"""Email notifications: booking confirmations, reminders and notices of every change.

The database decides what must be sent (sql/0050_notifications.sql: triggers
write the outbox in the changing transaction; reminders are queued when due by
``private.queue_due_reminders()``). The scheduled ``notifications`` function
calls ``run()``: queue the due reminders, then claim due messages in batches,
send each over SMTP (``smtp``), and record the outcome (``outbox``). Sending is
at least once per outbox row: a crash between sending and recording sends the
same message again, with the same Message-ID (``render.message_id``).

Outcomes: sent; retried with backoff (the server failed, or answered 4xx);
failed for good (a 5xx refusal, or no address), visible in the outbox and the
health endpoint; skipped (no longer true: the session was cancelled, moved or
has started, or a later reminder replaces it).
"""

from __future__ import annotations

import logging
import smtplib
import threading
import time

from shared import db, monitoring
from shared.notifications import outbox
from shared.notifications.render import compose
from shared.notifications.smtp import Mailer, SendRefused, parse_smtp_url
from shared.settings import get_settings

log = logging.getLogger("functions")

BATCH_SIZE = 100
TIME_BUDGET_SECONDS = 50.0  # the job runs every minute; overlapping runs are safe anyway

_off_announced = threading.Event()


def email_enabled() -> bool:
    settings = get_settings()
    return bool(settings.smtp_url and settings.email_from)


def announce_if_off() -> bool:
    """True when email is off; says so in the log once per process."""
    if email_enabled():
        return False
    if not _off_announced.is_set():
        _off_announced.set()
        missing = [name for name, value in (("SMTP_URL", get_settings().smtp_url),
                                            ("EMAIL_FROM", get_settings().email_from)) if not value]
        log.warning("Email is off (%s not set): messages stay queued in private.email_outbox until it is on",
                    " and ".join(missing))
    return True


def run(*, batch_size: int = BATCH_SIZE, time_budget: float = TIME_BUDGET_SECONDS) -> dict[str, object]:
    """The notifications job: due reminders queued, then due messages sent until none is left
    (or the time budget is spent). Returns the counts of this run."""
    totals = {"reminders_queued": 0, "sent": 0, "retrying": 0, "failed": 0, "skipped": 0}
    if announce_if_off():
        return {"email": "off", **totals}
    settings = get_settings()
    server = parse_smtp_url(settings.smtp_url)
    with db.transaction() as conn:
        totals["reminders_queued"] = outbox.queue_due_reminders(conn)
    deadline = time.monotonic() + time_budget
    with Mailer(server) as mailer:
        while time.monotonic() < deadline:
            with db.transaction() as conn:
                batch = outbox.claim(conn, batch_size)
            if not batch:
                break
            if not send_batch(mailer, settings.email_from, batch, totals):
                break  # the server is unreachable: the rest waits for its backoff
    return {"email": "on", **totals}


def send_batch(mailer: Mailer, email_from: str, batch: list[outbox.Claimed],
               totals: dict[str, object] | None = None) -> bool:
    """Sends claimed messages in order, each in its own transaction; False when the
    SMTP server failed (the untried rest is released for a later attempt)."""
    totals = totals if totals is not None else {"sent": 0, "retrying": 0, "failed": 0, "skipped": 0}
    for index, item in enumerate(batch):
        outcome = _deliver(mailer, email_from, item)
        totals[outcome] += 1
        if outcome == "retrying" and mailer.broken:
            with db.transaction() as conn:
                outbox.release(conn, batch[index + 1:], "Not tried: the SMTP server was unavailable.")
            totals["retrying"] += len(batch) - index - 1
            return False
    return True


def _deliver(mailer: Mailer, email_from: str, item: outbox.Claimed) -> str:
    message = item.message
    with db.transaction() as conn:
        reason = outbox.reason_to_skip(conn, item)
        if reason is not None:
            outbox.record_final(conn, message.id, "skipped", reason)
            return "skipped"
        if not message.recipient_email:
            outbox.record_final(conn, message.id, "failed", "The recipient has no email address.")
            return "failed"
        try:
            email = compose(message, email_from)
        except ValueError as exc:
            outbox.record_final(conn, message.id, "failed", str(exc))
            return "failed"
        except Exception as exc:  # a message that cannot be composed must not stop the others
            return _unexpected(conn, item, exc)
        try:
            mailer.send(email)
        except SendRefused as exc:
            if exc.permanent:
                log.warning("email %s refused for good: %s", message.id, exc)
                outbox.record_final(conn, message.id, "failed", f"Refused by the SMTP server: {exc}")
                return "failed"
            outbox.record_retry(conn, message.id, item.attempts, f"Deferred by the SMTP server: {exc}")
            return "retrying"
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("email %s not sent, the SMTP server failed; it will be retried: %s", message.id, exc)
            mailer.mark_broken()
            outbox.record_retry(conn, message.id, item.attempts, f"SMTP server unavailable: {exc}")
            return "retrying"
        except Exception as exc:
            return _unexpected(conn, item, exc)
        outbox.record_sent(conn, message.id)
        return "sent"


def _unexpected(conn, item: outbox.Claimed, exc: Exception) -> str:
    """A bug, not the server: reported, and the message retried with backoff while the run goes on."""
    log.error("email %s could not be sent; it will be retried", item.message.id, exc_info=exc)
    monitoring.record_error(exc, "EMAIL_FAILED")
    outbox.record_retry(conn, item.message.id, item.attempts, f"{type(exc).__name__}: {exc}")
    return "retrying"
