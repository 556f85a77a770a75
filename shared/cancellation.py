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
from shared.errors import AlreadyCancelled, BookingInPast, NotFound

# SQLSTATEs raised by private.check_cancellation() (sql/0008_cancellations.sql).
_REFUSALS = {
    "TB001": lambda session_id: NotFound(f"No session with id {session_id}"),
    "TB002": lambda session_id: AlreadyCancelled(f"Session {session_id} is already cancelled"),
    "TB003": lambda session_id: BookingInPast(f"Session {session_id} has already started and can no longer be cancelled"),
}


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
        raise refusal(session_id) from None
    return row["id"]


def after_commit(session_id: uuid.UUID) -> None:
    """Deletes the session's calendar event now if it can; otherwise it stays queued.

    Never raises: the cancellation is committed, so the caller must hear that it
    succeeded whatever happens here; the retry job takes the queued deletion.
    """
    try:
        calendar_sync.attempt_deletion(session_id)
    except Exception as exc:
        monitoring.record_error(exc, "INTERNAL_ERROR")
