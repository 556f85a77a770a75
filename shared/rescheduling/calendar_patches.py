"""Calendar moves that are never lost.

Moving a session queues its event's new times in ``private.calendar_patches``
(a trigger, in the moving transaction; a later move rewrites the row, a
cancellation completes it). ``attempt_patch`` tries it right after the commit;
``process_due`` is calendar-sync's retry, with backoff. A row is locked while
its patch is in flight (``for update skip locked``), so a second move of the
same session waits for that call to end and is then sent after it: the event
always ends at the latest times. 404 and 410 from Google mean the event is gone
(nothing to move), which counts as done.
"""

from __future__ import annotations

import logging
import uuid

from shared import calendar, db, monitoring
from shared.calendar_sync import backoff

log = logging.getLogger("functions")

DUE_QUERY = """
select c.session_id, c.calendar_id, c.event_id, c.starts_at, c.ends_at, c.attempts,
       private.calendar_subject(c.specialist_id) as specialist_email -- verified, never profiles.email
from private.calendar_patches c
where c.completed_at is null and {condition}
order by c.next_attempt_at
limit %(limit)s
for update of c skip locked
"""


def _move(row: dict) -> calendar.EventMove:
    return calendar.EventMove(calendar_id=row["calendar_id"], event_id=row["event_id"], starts_at=row["starts_at"],
                              ends_at=row["ends_at"], specialist_email=row["specialist_email"])


def _record(conn, session_id: uuid.UUID, attempts: int, error: str | None) -> None:
    if error is None:
        conn.execute("""update private.calendar_patches
                        set completed_at = now(), attempts = %s, last_error = null where session_id = %s""",
                     [attempts, session_id])
    else:
        conn.execute("""update private.calendar_patches
                        set attempts = %s, last_error = %s, next_attempt_at = now() + %s where session_id = %s""",
                     [attempts, error[:500], backoff(attempts), session_id])


def attempt_patch(session_id: uuid.UUID) -> bool:
    """Tries the session's queued patch now; True when nothing is left to do."""
    gateway = calendar.get_gateway()
    if not gateway.enabled:
        return False
    with db.transaction() as conn:
        row = conn.execute(DUE_QUERY.format(condition="c.session_id = %(session_id)s"),
                           {"session_id": session_id, "limit": 1}).fetchone()
        if row is None:
            return True
        error = None
        try:
            gateway.patch_session_event(_move(row))
        except calendar.CalendarError as exc:
            error = str(exc)
            log.warning("calendar move for session %s failed; it will be retried: %s", session_id, exc)
        _record(conn, session_id, row["attempts"] + 1, error)
    return error is None


def process_due(limit: int = 500) -> dict[str, int]:
    """calendar-sync's retry: every due patch, in batches; how many landed and failed."""
    gateway = calendar.get_gateway()
    if not gateway.enabled:
        return {"moved": 0, "failed": 0}
    with db.transaction() as conn:
        rows = conn.execute(DUE_QUERY.format(condition="c.next_attempt_at <= now()"), {"limit": limit}).fetchall()
        results = gateway.patch_events_batch([_move(row) for row in rows]) if rows else []
        moved = 0
        for row, result in zip(rows, results):
            _record(conn, row["session_id"], row["attempts"] + 1, None if result.ok else (result.error or "failed"))
            moved += result.ok
    return {"moved": moved, "failed": len(rows) - moved}


def report_stuck() -> int:
    """Reports to Sentry, once each, the patches still failing a day after the move."""
    with db.transaction() as conn:
        stuck = conn.execute(
            """update private.calendar_patches set reported_at = now()
               where completed_at is null and reported_at is null and queued_at < now() - interval '1 day'
               returning session_id, attempts"""
        ).fetchall()
    for row in stuck:
        monitoring.report_message(
            f"Calendar event of moved session {row['session_id']} still not moved after "
            f"{row['attempts']} attempts over a day",
            level="error", session_id=str(row["session_id"]), error_code="CALENDAR_UNAVAILABLE",
            function="calendar-sync",
        )
    return len(stuck)
