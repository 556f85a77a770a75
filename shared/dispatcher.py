"""The recurring-booking dispatcher (recurring-dispatcher), run daily by pg_cron.

The database does the work in one call, set-based
(``private.dispatch_recurring_bookings`` in sql/0015): which occurrences are due,
which cannot be booked and why, the sessions, and the recurrences moved on.
This module adds the audit entry, answers in seed 002's shape, and after the
commit creates the new sessions' calendar events in batches (``calendar_sync.create_pending_events``);
events that fail stay unsynced (``calendar_synced_at`` null) and are created by the
next call of ``calendar_sync.create_pending_events``: every dispatch and every
calendar-sync job run makes one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from shared import calendar, calendar_sync, db
from shared.inputs import a_flag, an_integer, fields, json_object

log = logging.getLogger("functions")

MISSED = "the occurrence was already past when dispatched"  # the error of a missed occurrence


def parse_dispatch_request(request) -> dict[str, Any]:
    """An empty body, or {"dry_run": bool, "horizon_days": 0-60}."""
    if not request.get_data(cache=True):
        return {"dry_run": False, "horizon_days": None}

    parsed = fields(json_object(request), required={},
                    optional={"dry_run": a_flag, "horizon_days": an_integer(0, 60)})
    return {"dry_run": bool(parsed["dry_run"]), "horizon_days": parsed["horizon_days"]}


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


DEADLOCK_RETRIES = 3  # a booking made at the same moment can deadlock with the bulk insert


def _run_once(run_at: datetime, horizon: int, sync: bool, dry_run: bool) -> tuple[list[str], list[dict]]:
    """One dispatch transaction: the SQL function, then the audit entry; rolled back for a dry run."""
    created: list[str] = []
    errors: list[dict] = []
    try:
        with db.transaction(channel="recurring-dispatcher") as conn:
            # A run can return a million rows: streamed (a server-side cursor), as text
            # in tuples rather than UUID objects in dicts.
            cursor = conn.cursor("dispatch_results", row_factory=tuple_row)
            cursor.itersize = 10_000
            cursor.execute(
                """select outcome, recurring_id::text, session_id::text, occurrence_date::text, error
                   from private.dispatch_recurring_bookings(%s, %s, %s)""",
                [run_at, horizon, sync],
            )
            for outcome, recurring_id, session_id, occurrence_date, error in cursor:
                if outcome == "created":
                    created.append(session_id)
                else:
                    errors.append({"recurring_id": recurring_id, "occurrence_date": occurrence_date,
                                   "error": error})
            missed = sum(1 for e in errors if e["error"] == MISSED)
            conn.execute(
                """insert into public.audit_log (action, actor_role, entity_type, new_values, status)
                   values ('recurring_bookings_dispatched', 'system', 'recurring_bookings', %s, %s)""",
                [Jsonb({"dispatched": len(created), "errors": len(errors), "missed": missed,
                        "horizon_days": horizon, "run_at": run_at.isoformat()}),
                 "success_with_errors" if errors else "success"],
            )
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return created, errors


def dispatch(*, run_at: datetime | None = None, horizon_days: int | None = None,
             dry_run: bool = False) -> dict[str, Any]:
    run_at = run_at or datetime.now(timezone.utc)
    if horizon_days is None:  # the practice setting, which the database holds
        with db.transaction() as conn:
            horizon_days = conn.execute(
                "select (private.practice_settings()).dispatch_horizon_days as days").fetchone()["days"]
    horizon = horizon_days
    sync = calendar.get_gateway().enabled and not dry_run
    for attempt in range(1, DEADLOCK_RETRIES + 1):
        try:
            created, errors = _run_once(run_at, horizon, sync, dry_run)
            break
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_RETRIES:
                raise
            log.warning("recurring dispatch deadlocked with a concurrent booking; retrying (%d)", attempt)
    if sync:
        # The new sessions' events, and any an earlier run could not create.
        calendar_sync.create_pending_events()
    verb = "Would dispatch" if dry_run else "Dispatched"
    return {
        "success": True,
        "message": f"{verb} {len(created)} recurring bookings",
        "count": len(created),
        "bookings": created,
        "errors": errors,
        "dry_run": dry_run,
    }
