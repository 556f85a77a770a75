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

CREATION_CHUNK = 500  # sessions whose events are created per locked round
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


def run_job() -> dict[str, int]:
    """The calendar-sync job: due deletions, then due moves of events (rescheduled
    sessions), then events still to create (made by a dispatch while the calendar was
    failing), then the report of deletions and moves stuck for a day."""
    from shared.rescheduling import calendar_patches  # it imports this module's backoff

    deletions = process_due()
    moves = calendar_patches.process_due()
    creations = create_pending_events()
    return {**deletions, "stuck_reported": report_stuck() + calendar_patches.report_stuck(),
            "events_created": creations["created"], "events_failed": creations["failed"],
            "events_moved": moves["moved"], "moves_failed": moves["failed"]}


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
    return {"deleted": deleted, "failed": len(rows) - deleted}


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


def create_pending_events(limit: int = 100_000) -> dict[str, int]:
    """Creates the events of confirmed future sessions that have none yet, in
    locked chunks (a cancellation waits for its session's chunk, so an event is
    never created after its session was cancelled)."""
    gateway = calendar.get_gateway()
    totals = {"created": 0, "failed": 0}
    if not gateway.enabled:
        return totals
    while totals["created"] + totals["failed"] < limit:
        with db.transaction() as conn:
            pending = conn.execute(
                """select s.id, s.google_calendar_event_id, s.starts_at, s.ends_at, s.booking_reference,
                          coalesce(p.google_calendar_id, 'primary') as calendar_id,
                          private.calendar_subject(p.id) as email
                   from public.sessions s join public.profiles p on p.id = s.specialist_id
                   where s.calendar_synced_at is null and s.google_calendar_event_id is not null
                     and s.status = 'confirmed' and s.starts_at > now()
                   order by s.starts_at
                   limit %s
                   for update of s skip locked""",
                [CREATION_CHUNK],
            ).fetchall()
            if not pending:
                break
            results = gateway.create_events_batch([
                calendar.CalendarSession(id=r["id"], calendar_id=r["calendar_id"], starts_at=r["starts_at"],
                                         ends_at=r["ends_at"], booking_reference=r["booking_reference"],
                                         specialist_email=r["email"])
                for r in pending
            ])
            done = [r["id"] for r, result in zip(pending, results) if result.ok]
            conn.execute("update public.sessions set calendar_synced_at = now() where id = any(%s)", [done])
            totals["created"] += len(done)
            totals["failed"] += len(pending) - len(done)
            if len(done) < len(pending):
                break  # the calendar is failing: the job retries later
    return totals
