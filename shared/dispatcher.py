"""The recurring-booking dispatcher (recurring-dispatcher), run daily by pg_cron.

The database does the work in one call, set-based
(``private.dispatch_recurring_bookings`` in sql/0015): which occurrences are due,
which cannot be booked and why, the sessions, and the recurrences moved on.
This module adds the audit entry, answers in seed 002's shape, and after the
commit creates the new sessions' calendar events in batches; events that fail
stay unsynced and the calendar-sync job creates them later.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared import calendar, db
from shared.inputs import an_integer, fields, json_object
from shared.settings import get_settings

CREATION_CHUNK = 500  # sessions whose events are created per locked round


def parse_dispatch_request(request) -> dict[str, Any]:
    """An empty body, or {"dry_run": bool, "horizon_days": 0-60}."""
    if not request.get_data(cache=True):
        return {"dry_run": False, "horizon_days": None}

    def a_flag(name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        from shared.errors import InvalidRequest
        raise InvalidRequest(f"Field {name!r} must be true or false, got {value!r}", details={"field": name})

    parsed = fields(json_object(request), required={},
                    optional={"dry_run": a_flag, "horizon_days": an_integer(0, 60)})
    return {"dry_run": bool(parsed["dry_run"]), "horizon_days": parsed["horizon_days"]}


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def dispatch(*, run_at: datetime | None = None, horizon_days: int | None = None,
             dry_run: bool = False) -> dict[str, Any]:
    run_at = run_at or datetime.now(timezone.utc)
    horizon = get_settings().dispatch_horizon_days if horizon_days is None else horizon_days
    sync = calendar.get_gateway().enabled and not dry_run
    rows: list[dict] = []
    try:
        with db.transaction(channel="recurring-dispatcher") as conn:
            rows = conn.execute(
                "select * from private.dispatch_recurring_bookings(%s, %s, %s)", [run_at, horizon, sync]
            ).fetchall()
            created = [str(r["session_id"]) for r in rows if r["outcome"] == "created"]
            errors = [{"recurring_id": str(r["recurring_id"]), "occurrence_date": r["occurrence_date"].isoformat(),
                       "error": r["error"]} for r in rows if r["outcome"] != "created"]
            conn.execute(
                """insert into public.audit_log (action, actor_role, entity_type, new_values, status)
                   values ('recurring_bookings_dispatched', 'system', 'recurring_bookings', %s, %s)""",
                [Jsonb({"dispatched": len(created), "errors": len(errors), "horizon_days": horizon,
                        "run_at": run_at.isoformat()}),
                 "success_with_errors" if errors else "success"],
            )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    if sync and created:
        create_pending_events()
    verb = "Would dispatch" if dry_run else "Dispatched"
    return {
        "success": True,
        "message": f"{verb} {len(created)} recurring bookings",
        "count": len(created),
        "bookings": created,
        "errors": errors,
        "dry_run": dry_run,
    }


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
                          coalesce(p.google_calendar_id, 'primary') as calendar_id, p.email
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
