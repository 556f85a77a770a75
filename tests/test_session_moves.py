"""A move in the database (sql/0070_rescheduling.sql), whichever door writes it: an UPDATE
of a session's times by a trusted writer (what booking-reschedule and the link do, and
what an operator's SQL does) meets the booking rules with its own slot ignored, the move's
own rules (confirmed, not started, the client's minimum notice), and leaves one audit row
and one queued calendar patch; a status change never writes a move, a move never a status.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from tests.conftest import RULES_ON
from tests.support import Person, create_person
from tests.test_booking_rules import a_day_ahead, bookable, insert_session, local


def move(conn: psycopg.Connection, session: dict, starts_at: datetime, *, actor: Person | None = None,
         reason: str | None = None, channel: str | None = None) -> dict:
    """Moves the session as a trusted writer acting for `actor`, the rules on (one transaction)."""
    with conn.transaction():
        conn.execute(RULES_ON)
        conn.execute("select set_config('app.actor_id', %s, true), set_config('app.move_reason', %s, true), "
                     "set_config('app.channel', %s, true)",
                     [str(actor.id) if actor else "", reason or "", channel or ""])
        moved = conn.execute(
            "update public.sessions set starts_at = %s, ends_at = %s + (ends_at - starts_at) where id = %s "
            "returning *", [starts_at, starts_at, session["id"]]).fetchone()
        # The test's whole transaction is one: set back what a savepoint's release would keep.
        conn.execute("set local app.booking_rules = 'off'")
        conn.execute("select set_config('app.actor_id', '', true)")
        return moved


def refused(conn: psycopg.Connection, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(psycopg.Error) as caught:
        move(conn, *args, **kwargs)
    return caught.value.sqlstate, caught.value.diag.message_primary


@pytest.fixture
def world(db: psycopg.Connection) -> dict:
    specialist = bookable(db, windows=tuple((d, "08:00", "20:00") for d in range(7)))
    client = create_person(db, "client")
    session = insert_session(db, specialist, client, local(a_day_ahead(5), "10:00"))
    db.execute("update public.sessions set google_calendar_event_id = %s where id = %s",
               [session["id"].hex, session["id"]])
    return {"specialist": specialist, "client": client, "session": session}


def test_a_move_is_audited_with_both_times_who_and_why_and_queues_one_patch(db, world) -> None:
    session, client = world["session"], world["client"]
    to = local(a_day_ahead(6), "11:00")

    moved = move(db, session, to, actor=client, reason="Work", channel="booking-reschedule")

    assert (moved["id"], moved["booking_reference"], moved["starts_at"], moved["ends_at"]) == (
        session["id"], session["booking_reference"], to, to + timedelta(minutes=50))
    audit = db.execute("select action, actor_id, actor_role, entity_type, old_values, new_values from public.audit_log"
                       " where entity_id = %s", [session["id"]]).fetchall()
    assert audit == [{"action": "session_moved", "actor_id": client.id, "actor_role": "client",
                      "entity_type": "session",
                      "old_values": {"starts_at": session["starts_at"].isoformat(),
                                     "ends_at": session["ends_at"].isoformat()},
                      "new_values": {"starts_at": to.isoformat(), "ends_at": (to + timedelta(minutes=50)).isoformat(),
                                     "reason": "Work", "channel": "booking-reschedule"}}]
    assert db.execute("select count(*) as n from public.booking_status_history where session_id = %s",
                      [session["id"]]).fetchone()["n"] == 1, "only the first status"
    patches = db.execute("select session_id, event_id, calendar_id, starts_at, ends_at, completed_at "
                         "from private.calendar_patches").fetchall()
    assert patches == [{"session_id": session["id"], "event_id": session["id"].hex, "calendar_id": "primary",
                        "starts_at": to, "ends_at": to + timedelta(minutes=50), "completed_at": None}]


def test_an_operators_move_is_audited_as_the_system(db, world) -> None:
    session = world["session"]

    move(db, session, local(a_day_ahead(6), "11:00"))

    (audit,) = db.execute("select actor_id, actor_role, new_values from public.audit_log").fetchall()
    assert (audit["actor_id"], audit["actor_role"], audit["new_values"]["reason"],
            audit["new_values"]["channel"]) == (None, "system", None, "database")


def test_a_second_move_rewrites_the_queued_patch(db, world) -> None:
    session = world["session"]
    first, second = local(a_day_ahead(6), "11:00"), local(a_day_ahead(7), "09:00")
    move(db, session, first)
    db.execute("update private.calendar_patches set attempts = 3, last_error = 'HTTP 503', "
               "next_attempt_at = now() + interval '10 minutes'")

    move(db, session, second)

    row = db.execute("select starts_at, attempts, last_error, completed_at, next_attempt_at <= now() as due "
                     "from private.calendar_patches").fetchone()
    assert row == {"starts_at": second, "attempts": 0, "last_error": None, "completed_at": None, "due": True}
    assert db.execute("select count(*) as n from public.audit_log where action = 'session_moved'"
                      ).fetchone()["n"] == 2


def test_a_cancellation_completes_a_queued_patch(db, world) -> None:
    session = world["session"]
    move(db, session, local(a_day_ahead(6), "11:00"))

    db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
               [session["id"], world["client"].id])

    row = db.execute("select completed_at, last_error from private.calendar_patches").fetchone()
    assert row["completed_at"] is not None
    assert row["last_error"] == "Superseded: the session was cancelled and its event is deleted."
    assert db.execute("select count(*) as n from private.calendar_deletions").fetchone()["n"] == 1


def test_a_session_without_an_event_queues_no_patch(db, world) -> None:
    db.execute("update public.sessions set google_calendar_event_id = null")

    move(db, world["session"], local(a_day_ahead(6), "11:00"))

    assert db.execute("select count(*) as n from private.calendar_patches").fetchone()["n"] == 0
    assert db.execute("select count(*) as n from public.audit_log").fetchone()["n"] == 1


def test_a_cancelled_or_started_session_does_not_move_at_any_door(db, world) -> None:
    session, client = world["session"], world["client"]
    started = insert_session(db, world["specialist"], client, local(a_day_ahead(9), "10:00"))
    db.execute("set local app.booking_rules = 'off'")  # insert_session turned them on for the transaction
    db.execute("update public.sessions set starts_at = now() - interval '5 minutes', "
               "ends_at = now() + interval '45 minutes' where id = %s", [started["id"]])  # rules off: an import
    db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
               [session["id"], client.id])

    assert refused(db, session, local(a_day_ahead(6), "11:00")) == (
        "TB002", f"Session {session['id']} is cancelled and cannot be moved.")
    assert refused(db, started, local(a_day_ahead(6), "11:00")) == (
        "TB003", f"Session {started['id']} has already started and can no longer be moved.")


@pytest.mark.parametrize("who", ["client", "specialist", "system"])
def test_only_the_client_is_held_to_the_minimum_notice(db, world, who: str) -> None:
    db.execute("update private.practice_settings set cancellation_min_notice_hours = 200")  # rolled back after
    session = world["session"]  # five days ahead: inside 200 hours
    actor = {"client": world["client"], "specialist": world["specialist"], "system": None}[who]
    to = local(a_day_ahead(6), "11:00")

    if who == "client":
        assert refused(db, session, to, actor=actor) == (
            "TB006", "Sessions must be moved at least 200 hours ahead; please contact your specialist.")
        assert db.execute("select starts_at from public.sessions").fetchone()["starts_at"] == session["starts_at"]
    else:
        assert move(db, session, to, actor=actor)["starts_at"] == to


def test_the_booking_rules_apply_to_the_new_time_with_the_sessions_own_slot_ignored(db, world) -> None:
    session, specialist = world["session"], world["specialist"]
    other = create_person(db, "client")
    insert_session(db, specialist, other, local(a_day_ahead(5), "11:00"))

    by_ten_minutes = move(db, session, session["starts_at"] + timedelta(minutes=10))

    assert by_ten_minutes["starts_at"] == session["starts_at"] + timedelta(minutes=10)
    assert refused(db, by_ten_minutes, local(a_day_ahead(5), "10:30")) == (
        "TB014", "The specialist already has a session at that time")
    assert refused(db, by_ten_minutes, local(a_day_ahead(5), "19:30")) == (
        "TB012", "The slot is outside the specialist's working hours")
    assert refused(db, by_ten_minutes, datetime.now().astimezone() + timedelta(hours=2)) == (
        "TB010", "Sessions must be booked at least 24 hours ahead")
