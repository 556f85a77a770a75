"""The booking rules as the functions meet them: refusals from the database.

The rules themselves live in SQL, once (``private.slot_problem`` in
sql/0019_booking_rules.sql, asked by a trigger on every write of a session's
time, by the dispatcher and by ``available_slots``). A refusal arrives as a
PostgreSQL error with its own SQLSTATE and a plain sentence; this module turns it
into the API's error, keeping the database's sentence.
"""

from __future__ import annotations

import psycopg

from shared.errors import AppError, InvalidRequest, NotFound, SlotUnavailable

# SQLSTATE → the SLOT_UNAVAILABLE reason (sql/0019_booking_rules.sql, private.slot_problem).
SLOT_REASONS = {
    "TB010": "too_soon",
    "TB011": "too_far",
    "TB012": "outside_hours",
    "TB013": "exception",
    "TB014": "taken",
    "TB015": "taken",
}
SPECIALIST_BUSY = "The specialist already has a session at that time"
CLIENT_BUSY_FOR_CLIENT = "You already have a session at that time"


def refusal(exc: psycopg.Error, *, caller_is_client: bool) -> AppError | None:
    """The API error for a refusal by the booking rules, or None for any other error."""
    state = exc.sqlstate or ""
    message = (exc.diag.message_primary or "").rstrip(".")
    if state in SLOT_REASONS:
        if state == "TB015" and caller_is_client:
            message = CLIENT_BUSY_FOR_CLIENT
        return SlotUnavailable(SLOT_REASONS[state], message)
    if isinstance(exc, psycopg.errors.ExclusionViolation):
        # A racing writer took the slot between the rules' check and the insert.
        if exc.diag.constraint_name == "sessions_no_specialist_overlap":
            return SlotUnavailable("taken", SPECIALIST_BUSY)
        return SlotUnavailable("taken", CLIENT_BUSY_FOR_CLIENT if caller_is_client else
                               "The client already has a session at that time")
    if state == "TB016":
        return InvalidRequest(message)
    if state in ("TB017", "TB018"):
        return NotFound(message)
    return None
