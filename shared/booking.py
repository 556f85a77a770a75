"""Booking a session (booking-create).

In one transaction: the session row is inserted — the database checks it against
the booking rules (the specialist's hours in their timezone, exceptions, notice
and advance, the lengths offered, buffers, both parties' sessions) and prices it
at the rate of its length; its exclusion constraints hold the slot against any
racing booking — then the calendar
event is created with an id derived from the session id, and only then is the
transaction committed. If the calendar fails, nothing is committed and any event
that may have been created anyway (a timeout after Google acted) is deleted; a
retried insert can never make a second event because the id is ours.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from shared import booking_rules, calendar, db, monitoring
from shared.auth import Caller
from shared.errors import CalendarUnavailable, Forbidden, NotFound
from shared.intake import forms as intake_forms
from shared.intake.answers import IntakeSubmission, parse_intake
from shared.inputs import a_moment, a_text, a_uuid, an_integer, fields, json_object, one_of
from shared.links import cancellation_url

log = logging.getLogger("functions")

SESSION_TYPES = ("initial", "follow_up", "emergency")


@dataclass(frozen=True)
class BookingRequest:
    specialist_id: uuid.UUID
    starts_at: datetime
    duration_minutes: int | None = None
    session_type: str = "initial"
    special_requests: str | None = None
    intake: IntakeSubmission | None = None  # seed 001 sends the intake form with the booking


def parse_booking_request(request) -> BookingRequest:
    parsed = fields(
        json_object(request),
        required={"specialist_id": a_uuid, "starts_at": a_moment},
        optional={
            "duration_minutes": an_integer(15, 240),
            "session_type": one_of(*SESSION_TYPES),
            "special_requests": a_text(2000),
            "intake": parse_intake,
        },
    )
    return BookingRequest(
        specialist_id=parsed["specialist_id"],
        starts_at=parsed["starts_at"].astimezone(timezone.utc),
        duration_minutes=parsed["duration_minutes"],
        session_type=parsed["session_type"] or "initial",
        special_requests=parsed["special_requests"] or None,
        intake=parsed["intake"],
    )


# -- the slot ---------------------------------------------------------------------
# Whether a slot may be booked is the database's to say (private.slot_problem in
# sql/0019_booking_rules.sql, run by a trigger on every insert into sessions):
# this module inserts and maps a refusal to the API's error.

SPECIALIST_QUERY = """
select p.id, private.calendar_subject(p.id) as email, -- verified, never profiles.email
       coalesce(p.google_calendar_id, 'primary') as calendar_id,
       private.default_length(p.id) as default_minutes
from public.profiles p
where p.id = %s and p.role = 'specialist'
"""


# -- booking --------------------------------------------------------------------------

def create_booking(caller: Caller, request: BookingRequest) -> dict[str, Any]:
    if caller.role != "client":
        raise Forbidden("Only clients book sessions")
    session_id = uuid.uuid4()
    monitoring.tag_session(session_id)
    gateway = calendar.get_gateway()
    event_id = calendar.event_id_for(session_id) if gateway.enabled else None
    event_may_exist = False
    try:
        with db.transaction(actor_id=caller.user_id, channel="booking-create") as conn:
            specialist = conn.execute(SPECIALIST_QUERY, [request.specialist_id]).fetchone()
            if specialist is None:
                raise NotFound(f"No specialist with id {request.specialist_id}")
            if specialist["default_minutes"] is None:
                raise NotFound(f"Specialist {request.specialist_id} has no current rate, so cannot be booked")
            duration = request.duration_minutes or specialist["default_minutes"]
            ends_at = request.starts_at + timedelta(minutes=duration)
            try:
                session = conn.execute(
                    """insert into public.sessions
                         (id, specialist_id, client_id, starts_at, ends_at, session_type, special_requests,
                          google_calendar_event_id, calendar_synced_at)
                       values (%s, %s, %s, %s, %s, %s, %s, %s,
                               -- the event is created before the commit, or nothing is committed
                               case when %s then now() end)
                       returning id, booking_reference, starts_at, ends_at, status""",
                    [session_id, specialist["id"], caller.user_id, request.starts_at, ends_at,
                     request.session_type, request.special_requests, event_id, gateway.enabled],
                ).fetchone()
            except psycopg.Error as exc:
                refusal = booking_rules.refusal(exc, caller_is_client=True)
                if refusal is None:
                    raise
                raise refusal from None
            conn.execute(
                """insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, new_values)
                   values ('session_booked', %s, 'client', 'session', %s, %s)""",
                [caller.user_id, session_id, psycopg.types.json.Jsonb({
                    "status": "confirmed", "specialist_id": str(specialist["id"]),
                    "starts_at": session["starts_at"].isoformat(), "ends_at": session["ends_at"].isoformat(),
                })],
            )
            intake_forms.store_with_booking(conn, session_id, caller.user_id, request.intake)
            if gateway.enabled:
                event_may_exist = True
                gateway.create_session_event(calendar.CalendarSession(
                    id=session_id, calendar_id=specialist["calendar_id"], starts_at=session["starts_at"],
                    ends_at=session["ends_at"], booking_reference=session["booking_reference"],
                    specialist_email=specialist["email"],
                ))
    except Exception as exc:
        if event_may_exist:
            _remove_orphan_event(gateway, specialist, session_id, event_id)
        if isinstance(exc, CalendarUnavailable):
            raise CalendarUnavailable("The calendar could not be updated, so the session was not booked; "
                                      "try again shortly") from exc
        raise
    return {
        "success": True,
        "session_id": str(session["id"]),
        "booking_id": str(session["id"]),  # the same id, by the name booking-cancel asks for
        "booking_reference": session["booking_reference"],
        "starts_at": session["starts_at"].isoformat(),
        "ends_at": session["ends_at"].isoformat(),
        "status": session["status"],
        "cancel_url": cancellation_url(session_id),
    }


def _remove_orphan_event(gateway: calendar.CalendarGateway, specialist: dict, session_id: uuid.UUID,
                         event_id: str) -> None:
    """The session was not stored: make sure its event does not exist either."""
    try:
        gateway.delete_session_event(
            specialist["calendar_id"], event_id, specialist_email=specialist["email"])
    except Exception as exc:  # the retry job takes it from here
        log.warning("calendar event of an unbooked session queued for deletion: %s", exc)
        with db.transaction() as conn:
            conn.execute(
                """insert into private.calendar_deletions (session_id, calendar_id, event_id, specialist_id,
                                                           attempts, last_error)
                   values (%s, %s, %s, %s, 1, %s) on conflict (session_id) do nothing""",
                [session_id, specialist["calendar_id"], event_id, specialist["id"], str(exc)[:500]],
            )
