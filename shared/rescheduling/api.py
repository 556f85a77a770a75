"""booking-reschedule: the session's client or specialist (or an admin) moves it.

1. the caller is authenticated and is the session's client or specialist (or an
   admin); anyone else hears NOT_FOUND, exactly as for a session that does not
   exist (booking-cancel's rule);
2. the session is confirmed and has not started, and the new start differs from
   the current one;
3. one UPDATE moves it, keeping its length: the database checks the new slot by
   the booking rules (its own current slot does not count), refuses a client
   inside the minimum notice, and audits the move and queues the calendar patch
   and the "moved" emails in this transaction;
4. after the commit, the calendar event is moved (or stays queued for retry).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shared import db, monitoring
from shared.auth import Caller
from shared.errors import AlreadyCancelled, BookingInPast, InvalidRequest, NotFound
from shared.inputs import a_moment, a_text, a_uuid, fields, json_object
from shared.links import cancellation_url
from shared.rescheduling import moves

SUCCESS_MESSAGE = "Session moved."
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class RescheduleRequest:
    booking_id: uuid.UUID
    starts_at: datetime
    reason: str | None = None


def parse_reschedule_request(request) -> RescheduleRequest:
    parsed = fields(
        json_object(request),
        required={"booking_id": a_uuid, "starts_at": a_moment},
        optional={"reason": a_text(MAX_REASON_LENGTH)},
    )
    return RescheduleRequest(parsed["booking_id"], parsed["starts_at"].astimezone(timezone.utc),
                             parsed["reason"] or None)


def reschedule_booking(caller: Caller, request: RescheduleRequest, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    with db.transaction(actor_id=caller.user_id, channel="booking-reschedule") as conn:
        session = conn.execute(
            """select id, client_id, specialist_id, status, starts_at, ends_at
               from public.sessions where id = %s for update""",
            [request.booking_id],
        ).fetchone()
        parties = (session["client_id"], session["specialist_id"]) if session else ()
        if session is None or not (caller.user_id in parties or caller.is_admin):
            raise NotFound(f"No session with id {request.booking_id}")
        monitoring.tag_session(session["id"])
        if session["status"] == "cancelled":
            raise AlreadyCancelled(f"Session {session['id']} is cancelled and cannot be moved")
        if session["starts_at"] <= now:
            raise BookingInPast(f"Session {session['id']} has already started and can no longer be moved")
        if session["starts_at"] == request.starts_at:
            raise InvalidRequest(f"The session already starts at {request.starts_at.isoformat()}; "
                                 "choose another time", details={"field": "starts_at"})
        moved = moves.move_session(conn, session["id"], request.starts_at,
                                   caller_is_client=caller.user_id == session["client_id"], reason=request.reason)
    moves.after_commit(session["id"])
    return {
        "success": True,
        "message": SUCCESS_MESSAGE,
        "session_id": str(moved["id"]),
        "booking_id": str(moved["id"]),
        "booking_reference": moved["booking_reference"],
        "status": moved["status"],
        "starts_at": moved["starts_at"].isoformat(),
        "ends_at": moved["ends_at"].isoformat(),
        "previous_starts_at": session["starts_at"].isoformat(),
        "previous_ends_at": session["ends_at"].isoformat(),
        "cancel_url": cancellation_url(moved["id"]),
    }
