"""Cancelling a session as a signed-in user (booking-cancel), seed 002's steps:

1. the caller is authenticated and is the session's client or specialist (or an
   admin, audited as such); anyone else hears NOT_FOUND, exactly as for a session
   that does not exist, so the answer never reveals that a session exists;
2. the session is not already cancelled;
3. it has not started;
4–7. one insert into booking_cancellations, whose triggers refuse a client inside
   the practice's minimum cancellation notice, set the status and
   write the cancellation, history and audit rows in this transaction (the same
   path as a frontend's direct insert under RLS);
8. after the commit, the calendar event is deleted (or stays queued for retry).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from shared import cancellation, db, monitoring
from shared.auth import Caller
from shared.errors import AlreadyCancelled, BookingInPast, NotFound
from shared.inputs import a_text, a_uuid, fields, json_object

SUCCESS_MESSAGE = "Booking cancelled successfully. No refund will be processed."
MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class CancelRequest:
    booking_id: uuid.UUID
    reason: str


def parse_cancel_request(request) -> CancelRequest:
    parsed = fields(
        json_object(request),
        required={"booking_id": a_uuid, "reason": a_text(MAX_REASON_LENGTH, required_content=True)},
        optional={},
    )
    return CancelRequest(parsed["booking_id"], parsed["reason"])


def cancel_booking(caller: Caller, request: CancelRequest, now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    with db.transaction(actor_id=caller.user_id, channel="booking-cancel") as conn:
        session = conn.execute(
            """select id, client_id, specialist_id, status, starts_at
               from public.sessions where id = %s for update""",
            [request.booking_id],
        ).fetchone()
        parties = (session["client_id"], session["specialist_id"]) if session else ()
        if session is None or not (caller.user_id in parties or caller.is_admin):
            raise NotFound(f"No session with id {request.booking_id}")
        monitoring.tag_session(session["id"])
        if session["status"] == "cancelled":
            raise AlreadyCancelled(f"Session {session['id']} is already cancelled")
        if session["starts_at"] <= now:
            raise BookingInPast(f"Session {session['id']} has already started and can no longer be cancelled")
        cancellation.cancel_session(conn, session["id"], cancelled_by=caller.user_id, reason=request.reason)
    cancellation.after_commit(session["id"])
    return {"success": True, "message": SUCCESS_MESSAGE}
