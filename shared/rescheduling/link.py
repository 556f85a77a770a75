""""Reschedule" on the emailed link's page (token-cancel).

The link names the session by its id, which a move never changes, so any link
ever sent opens the session as it is now. Opening it (GET) lists the free
times of the coming days: the database's own free-slot read
(``private.free_slots``, what ``available_slots`` answers) for the session's
specialist and length, as its client sees them, the session's own slot ignored.
Only the page's form POST moves the session, in the client's name, through the
same move as booking-reschedule (every rule in the database).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from itertools import groupby
from zoneinfo import ZoneInfo

import psycopg

from shared import db, pages
from shared.errors import (
    AlreadyCancelled, BookingInPast, InvalidRequest, NotFound, RescheduleTooLate, SlotUnavailable,
)
from shared.inputs import a_moment
from shared.rescheduling import moves

DAYS_AHEAD = 14  # the free times offered: today and the next 13 days (the specialist's dates)
FALLBACK_DAYS = (DAYS_AHEAD, 7, 2)  # fewer days when more than free_slots' 1,000 fit in them
LINK_REASON = "Moved by the client through the emailed link"
CHANNEL = "token-cancel"

FREE_SLOTS_QUERY = """
select f.starts_at, f.ends_at
from private.free_slots(%(specialist)s, %(from_date)s, %(to_date)s, %(minutes)s, %(client)s, %(session)s, now()) f
"""


def free_days(conn: psycopg.Connection, row: dict) -> tuple[pages.SlotDay, ...]:
    """The free times to move the session to, grouped by the client's local day."""
    first: date = datetime.now(ZoneInfo(row["specialist_timezone"])).date()
    minutes = int((row["ends_at"] - row["starts_at"]).total_seconds() // 60)
    slots: list[dict] = []
    for days in FALLBACK_DAYS:
        try:
            with conn.transaction():  # a savepoint: a refusal leaves the caller's transaction usable
                slots = conn.execute(FREE_SLOTS_QUERY, {
                    "specialist": row["specialist_id"], "from_date": first, "to_date": first + timedelta(days=days - 1),
                    "minutes": minutes, "client": row["client_id"], "session": row["id"]}).fetchall()
            break
        except psycopg.Error as exc:
            if exc.sqlstate == "22023" and (exc.diag.message_primary or "").startswith("More than 1,000"):
                continue  # short sessions around the clock: fewer days fit the read's limit
            # The length is no longer offered, or no rate at all: there is nothing to offer.
            if exc.sqlstate in ("22023", "PT404"):
                return ()
            raise
    zone = ZoneInfo(row["timezone"])
    local = [(s["starts_at"].astimezone(zone), s["ends_at"].astimezone(zone), s["starts_at"])
             for s in slots if s["starts_at"] != row["starts_at"]]
    return tuple(
        pages.SlotDay(label=f"{day:%A} {day.day} {day:%B}",
                      slots=tuple((utc.astimezone(timezone.utc).isoformat(), f"{start:%H:%M}–{end:%H:%M}")
                                  for start, end, utc in group))
        for day, group in groupby(local, key=lambda item: item[0].date()))


def offer(row: dict) -> tuple[pages.SlotDay, ...]:
    with db.transaction() as conn:
        return free_days(conn, row)


def move(row: dict, token: str, choice: str | None, facts) -> tuple[int, str]:
    """The page's move form: (status, page). `facts` formats a session row for the pages."""
    session_id: uuid.UUID = row["id"]
    before = facts(row)
    try:
        starts_at = a_moment("starts_at", choice).astimezone(timezone.utc) if choice else None
    except InvalidRequest:
        starts_at = None
    if starts_at is None:
        return 400, pages.choose_again("Choose a new time", "Please choose one of the free times below",
                                       before, token, offer(row), DAYS_AHEAD)
    try:
        with db.transaction(actor_id=row["client_id"], channel=CHANNEL) as conn:
            current = conn.execute("select starts_at from public.sessions where id = %s for update",
                                   [session_id]).fetchone()
            if current["starts_at"] == starts_at:
                return 400, pages.choose_again("Choose a new time", "Your session already starts at that time",
                                               before, token, free_days(conn, row), DAYS_AHEAD)
            moved = moves.move_session(conn, session_id, starts_at, caller_is_client=True, reason=LINK_REASON)
    except AlreadyCancelled:
        return 409, pages.already_cancelled(before)
    except BookingInPast:
        return 409, pages.already_started(before)
    except RescheduleTooLate as refused:
        return 409, pages.too_late_to_move(before, refused.message)
    except (SlotUnavailable, InvalidRequest, NotFound) as refused:
        return 409, pages.choose_again("This time is not free", refused.message, before, token, offer(row),
                                       DAYS_AHEAD)
    moves.after_commit(session_id)
    return 200, pages.moved(facts({**row, "starts_at": moved["starts_at"], "ends_at": moved["ends_at"]}), before)
