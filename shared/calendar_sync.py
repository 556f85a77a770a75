"""Calendar deletions that are never lost.

Cancelling queues the event's deletion in ``private.calendar_deletions`` (a
trigger, in the cancelling transaction). ``attempt_deletion`` tries one right
after the commit; ``process_due`` is the scheduled retry. A row is locked while
its deletion is in flight (``for update skip locked``), so an event is deleted
once even when the immediate attempt and the retry job meet; 404 and 410 from
Google mean it is gone, which counts as done.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from shared import calendar, db, monitoring

log = logging.getLogger("functions")

MAX_BACKOFF = timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, … minutes after each failure, at most an hour."""
    # The exponent is capped too: 2 ** 41 minutes no longer fits in a timedelta, and a
    # deletion failing hourly reaches 42 attempts in under two days.
    exponent = min(max(attempts - 1, 0), 6)  # 2 ** 6 minutes is past the hour already
    return min(timedelta(minutes=2 ** exponent), MAX_BACKOFF)


def _record(conn, session_id: uuid.UUID, attempts: int, error: str | None) -> None:
    if error is None:
        conn.execute(
            """update private.calendar_deletions
               set completed_at = now(), attempts = %s, last_error = null where session_id = %s""",
            [attempts, session_id],
        )
    else:
        conn.execute(
            """update private.calendar_deletions
               set attempts = %s, last_error = %s, next_attempt_at = now() + %s where session_id = %s""",
            [attempts, error[:500], backoff(attempts), session_id],
        )


def attempt_deletion(session_id: uuid.UUID) -> bool:
    """Tries the session's queued deletion now; True when nothing is left to do."""
    gateway = calendar.get_gateway()
    if not gateway.enabled:
        return False
    with db.transaction() as conn:
        row = conn.execute(
            """select session_id, calendar_id, event_id, specialist_email, attempts
               from private.calendar_deletions
               where session_id = %s and completed_at is null
               for update skip locked""",
            [session_id],
        ).fetchone()
        if row is None:
            return True
        error = None
        try:
            gateway.delete_session_event(row["calendar_id"], row["event_id"],
                                         specialist_email=row["specialist_email"])
        except calendar.CalendarError as exc:
            error = str(exc)
            log.warning("calendar deletion for session %s failed; it will be retried: %s", session_id, exc)
        _record(conn, session_id, row["attempts"] + 1, error)
    return error is None


def process_due(limit: int = 500) -> dict[str, int]:
    """The retry job: every due deletion, in batches; returns how many succeeded and failed."""
    gateway = calendar.get_gateway()
    if not gateway.enabled:
        return {"deleted": 0, "failed": 0}
    with db.transaction() as conn:
        rows = conn.execute(
            """select session_id, calendar_id, event_id, specialist_email, attempts
               from private.calendar_deletions
               where completed_at is null and next_attempt_at <= now()
               order by next_attempt_at
               limit %s
               for update skip locked""",
            [limit],
        ).fetchall()
        results = gateway.delete_events_batch(
            [calendar.EventRef(r["calendar_id"], r["event_id"], r["specialist_email"]) for r in rows]
        ) if rows else []
        deleted = 0
        for row, result in zip(rows, results):
            _record(conn, row["session_id"], row["attempts"] + 1, None if result.ok else (result.error or "failed"))
            deleted += result.ok
    return {"deleted": deleted, "failed": len(rows) - deleted, "stuck_reported": report_stuck()}


def report_stuck() -> int:
    """Reports to Sentry, once each, the deletions still failing a day after cancelling."""
    with db.transaction() as conn:
        stuck = conn.execute(
            """update private.calendar_deletions set reported_at = now()
               where completed_at is null and reported_at is null and created_at < now() - interval '1 day'
               returning session_id, attempts"""
        ).fetchall()
    for row in stuck:
        monitoring.report_message(
            f"Calendar event of cancelled session {row['session_id']} still not deleted after "
            f"{row['attempts']} attempts over a day",
            level="error", session_id=str(row["session_id"]), error_code="CALENDAR_UNAVAILABLE",
            function="calendar-sync",
        )
    return len(stuck)
