"""Booking a session (booking-create).

The slot is checked against the specialist's weekly hours (in their timezone),
availability exceptions, notice and advance limits, and both parties' confirmed
sessions. Then, in one transaction: the session row is inserted (the database's
exclusion constraints hold the slot against any racing booking), the calendar
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
from zoneinfo import ZoneInfo

import psycopg

from shared import calendar, db, monitoring
from shared.auth import Caller
from shared.errors import CalendarUnavailable, Forbidden, NotFound, SlotUnavailable
from shared.inputs import a_moment, a_text, a_uuid, an_integer, fields, json_object, one_of
from shared.links import cancellation_url
from shared.settings import get_settings

log = logging.getLogger("functions")

SESSION_TYPES = ("initial", "follow_up", "emergency")


@dataclass(frozen=True)
class BookingRequest:
    specialist_id: uuid.UUID
    starts_at: datetime
    duration_minutes: int | None = None
    session_type: str = "initial"
    special_requests: str | None = None


def parse_booking_request(request) -> BookingRequest:
    parsed = fields(
        json_object(request),
        required={"specialist_id": a_uuid, "starts_at": a_moment},
        optional={
            "duration_minutes": an_integer(15, 240),
            "session_type": one_of(*SESSION_TYPES),
            "special_requests": a_text(2000),
        },
    )
    return BookingRequest(
        specialist_id=parsed["specialist_id"],
        starts_at=parsed["starts_at"].astimezone(timezone.utc),
        duration_minutes=parsed["duration_minutes"],
        session_type=parsed["session_type"] or "initial",
        special_requests=parsed["special_requests"] or None,
    )


# -- the slot ---------------------------------------------------------------------

SPECIALIST_QUERY = """
select p.id, p.timezone, p.email, coalesce(p.google_calendar_id, 'primary') as calendar_id,
       r.amount, r.currency, r.duration_minutes
from public.profiles p
left join lateral private.current_rate(p.id) r on true
where p.id = %s and p.role = 'specialist'
"""


def check_slot(conn: psycopg.Connection, specialist: dict, client_id: uuid.UUID,
               starts_at: datetime, ends_at: datetime, now: datetime) -> None:
    """Raises SlotUnavailable with the first reason the slot cannot be booked."""
    settings = get_settings()
    if starts_at < now + timedelta(hours=settings.booking_min_notice_hours):
        raise SlotUnavailable("too_soon", f"Sessions must be booked at least "
                                          f"{settings.booking_min_notice_hours} hours ahead")
    if starts_at > now + timedelta(days=settings.booking_max_advance_days):
        raise SlotUnavailable("too_far", f"Sessions can be booked at most "
                                         f"{settings.booking_max_advance_days} days ahead")

    zone = ZoneInfo(specialist["timezone"])
    local_start, local_end = starts_at.astimezone(zone), ends_at.astimezone(zone)
    if local_end.date() != local_start.date():
        raise SlotUnavailable("outside_hours", "The session would run past midnight in the specialist's timezone")
    day, start, end = local_start.date(), local_start.time(), local_end.time()

    exceptions = conn.execute(
        """select is_available, all_day, start_time, end_time
           from public.specialist_availability_exceptions
           where specialist_id = %s and exception_date = %s""",
        [specialist["id"], day],
    ).fetchall()
    for exception in exceptions:
        if exception["is_available"]:
            continue
        if exception["all_day"] or (exception["start_time"] < end and start < exception["end_time"]):
            raise SlotUnavailable("exception", f"The specialist is not available on {day.isoformat()} at that time")

    # A partial "available" exception replaces that day's weekly hours with its own.
    special_hours = [(e["start_time"], e["end_time"]) for e in exceptions if e["is_available"] and not e["all_day"]]
    if special_hours:
        hours = special_hours
    else:
        weekday = (local_start.weekday() + 1) % 7  # 0 = Sunday, as in availability_windows
        hours = [
            (w["start_time"], w["end_time"])
            for w in conn.execute(
                """select start_time, end_time from public.availability_windows
                   where specialist_id = %s and day_of_week = %s and is_active""",
                [specialist["id"], weekday],
            )
        ]
    if not any(open_ <= start and end <= close for open_, close in hours):
        raise SlotUnavailable("outside_hours", "The slot is outside the specialist's working hours")

    taken = conn.execute(
        """select specialist_id = %(specialist)s as specialist_busy
           from public.sessions
           where status = 'confirmed'
             and (specialist_id = %(specialist)s or client_id = %(client)s)
             and tstzrange(starts_at, ends_at) && tstzrange(%(starts)s, %(ends)s)
           limit 1""",
        {"specialist": specialist["id"], "client": client_id, "starts": starts_at, "ends": ends_at},
    ).fetchone()
    if taken:
        raise _taken(specialist_busy=taken["specialist_busy"])


def _taken(*, specialist_busy: bool) -> SlotUnavailable:
    if specialist_busy:
        return SlotUnavailable("taken", "The specialist already has a session at that time")
    return SlotUnavailable("taken", "You already have a session at that time")


# -- booking --------------------------------------------------------------------------

def create_booking(caller: Caller, request: BookingRequest, now: datetime | None = None) -> dict[str, Any]:
    if caller.role != "client":
        raise Forbidden("Only clients book sessions")
    now = now or datetime.now(timezone.utc)
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
            if specialist["amount"] is None:
                raise NotFound(f"Specialist {request.specialist_id} has no current rate, so cannot be booked")
            duration = request.duration_minutes or specialist["duration_minutes"]
            ends_at = request.starts_at + timedelta(minutes=duration)
            check_slot(conn, specialist, caller.user_id, request.starts_at, ends_at, now)
            try:
                session = conn.execute(
                    """insert into public.sessions
                         (id, specialist_id, client_id, starts_at, ends_at, session_type, special_requests,
                          google_calendar_event_id, calendar_synced_at, price, currency)
                       values (%s, %s, %s, %s, %s, %s, %s, %s,
                               -- the event is created before the commit, or nothing is committed
                               case when %s then now() end, %s, %s)
                       returning id, booking_reference, starts_at, ends_at, status""",
                    [session_id, specialist["id"], caller.user_id, request.starts_at, ends_at,
                     request.session_type, request.special_requests, event_id, gateway.enabled,
                     specialist["amount"], specialist["currency"]],
                ).fetchone()
            except psycopg.errors.ExclusionViolation as exc:
                # Someone booked an overlapping session between our check and our insert.
                raise _taken(specialist_busy=exc.diag.constraint_name == "sessions_no_specialist_overlap") from None
            conn.execute(
                """insert into public.audit_log (action, actor_id, actor_role, entity_type, entity_id, new_values)
                   values ('session_booked', %s, 'client', 'session', %s, %s)""",
                [caller.user_id, session_id, psycopg.types.json.Jsonb({
                    "status": "confirmed", "specialist_id": str(specialist["id"]),
                    "starts_at": session["starts_at"].isoformat(), "ends_at": session["ends_at"].isoformat(),
                })],
            )
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
                """insert into private.calendar_deletions (session_id, calendar_id, event_id, specialist_email,
                                                           attempts, last_error)
                   values (%s, %s, %s, %s, 1, %s) on conflict (session_id) do nothing""",
                [session_id, specialist["calendar_id"], event_id, specialist["email"], str(exc)[:500]],
            )
