"""Moving a session: one UPDATE of its times, in the caller's transaction.

The database decides (sql/0019_booking_rules.sql and sql/0070_rescheduling.sql):
the new slot against the booking rules, the session's own slot ignored; only a
confirmed session that has not started; its client not inside the minimum
cancellation notice. Its triggers write the audit row (with the reason this
module puts in ``app.move_reason``) and queue the calendar patch, the email
outbox queues the "moved" notices. This module maps refusals to API errors.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg

from shared import booking_rules, monitoring
from shared.errors import AlreadyCancelled, AppError, BookingInPast, RescheduleTooLate
from shared.rescheduling import calendar_patches

MOVE_QUERY = """
update public.sessions
   set starts_at = %(starts_at)s, ends_at = %(starts_at)s + (ends_at - starts_at)
 where id = %(session_id)s
returning id, booking_reference, status, starts_at, ends_at
"""

# SQLSTATEs of private.check_session_move() (sql/0070_rescheduling.sql); the database's sentence is kept.
_MOVE_REFUSALS = {
    "TB002": AlreadyCancelled,
    "TB003": BookingInPast,
    "TB006": RescheduleTooLate,
}


def refusal(exc: psycopg.Error, *, caller_is_client: bool) -> AppError | None:
    """The API error for a refused move, or None for any other error."""
    error_class = _MOVE_REFUSALS.get(exc.sqlstate or "")
    if error_class is not None:
        return error_class((exc.diag.message_primary or "").rstrip("."))
    return booking_rules.refusal(exc, caller_is_client=caller_is_client)


def move_session(conn: psycopg.Connection, session_id: uuid.UUID, starts_at: datetime, *,
                 caller_is_client: bool, reason: str | None) -> dict:
    """Moves the session to start at `starts_at`, keeping its length; returns the moved row."""
    conn.execute("select set_config('app.move_reason', %s, true)", [reason or ""])
    try:
        with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
            row = conn.execute(MOVE_QUERY, {"session_id": session_id, "starts_at": starts_at}).fetchone()
    except psycopg.Error as exc:
        refused = refusal(exc, caller_is_client=caller_is_client)
        if refused is None:
            raise
        raise refused from None
    return row


def after_commit(session_id: uuid.UUID) -> None:
    """Moves the calendar event now if it can; otherwise the patch stays queued.

    Never raises: the move is committed, so the caller must hear that it
    succeeded whatever happens here; calendar-sync retries the queued patch.
    """
    try:
        calendar_patches.attempt_patch(session_id)
    except Exception as exc:
        monitoring.record_error(exc, "INTERNAL_ERROR")
