"""Cancelling a session: one mechanism for every door.

Every cancellation is an insert into ``booking_cancellations``; the database's
triggers then cancel the session, write its history and audit rows and queue the
calendar deletion, all in the caller's transaction. This module maps the
database's refusals to the API's errors, and after the commit tries the
calendar deletion at once (the retry job takes whatever fails).
"""

from __future__ import annotations

import uuid

import psycopg

from shared import calendar_sync, monitoring
from shared.errors import AlreadyCancelled, BookingInPast, CancellationTooLate, NotFound

# SQLSTATEs raised by private.check_cancellation() (sql/0019_booking_rules.sql).
_REFUSALS = {
    "TB001": lambda session_id, _: NotFound(f"No session with id {session_id}"),
    "TB002": lambda session_id, _: AlreadyCancelled(f"Session {session_id} is already cancelled"),
    "TB003": lambda session_id, _: BookingInPast(
        f"Session {session_id} has already started and can no longer be cancelled"),
    # The client's minimum cancellation notice: the database's sentence names the hours.
    "TB006": lambda _, message: CancellationTooLate(message.rstrip(".")),
}


class _DryRun(Exception):
    """Rolls the savepoint of a trial cancellation back."""


def cancel_session(conn: psycopg.Connection, session_id: uuid.UUID, *, cancelled_by: uuid.UUID | None,
                   reason: str | None) -> uuid.UUID:
    """Records the cancellation in the caller's transaction; returns its id."""
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
            row = conn.execute(
                """insert into public.booking_cancellations (booking_id, cancelled_by, reason)
                   values (%s, %s, %s) returning id""",
                [session_id, cancelled_by, reason],
            ).fetchone()
    except psycopg.Error as exc:
        refusal = _REFUSALS.get(exc.sqlstate or "")
        if refusal is None:
            raise
        raise refusal(session_id, exc.diag.message_primary or "") from None
    return row["id"]


def refusal_of(conn: psycopg.Connection, session_id: uuid.UUID, *, cancelled_by: uuid.UUID | None):
    """The error the database would answer to this cancellation now, or None when it
    would be accepted: the cancellation is tried in a savepoint and rolled back, so
    the rules are asked, never restated (the link's page asks before it offers a button)."""
    try:
        with conn.transaction():
            cancel_session(conn, session_id, cancelled_by=cancelled_by, reason=None)
            raise _DryRun
    except _DryRun:
        return None
    except (AlreadyCancelled, BookingInPast, CancellationTooLate, NotFound) as refused:
        return refused


def after_commit(session_id: uuid.UUID) -> None:
    """Deletes the session's calendar event now if it can; otherwise it stays queued.

    Never raises: the cancellation is committed, so the caller must hear that it
    succeeded whatever happens here; the retry job takes the queued deletion.
    """
    try:
        calendar_sync.attempt_deletion(session_id)
    except Exception as exc:
        monitoring.record_error(exc, "INTERNAL_ERROR")
