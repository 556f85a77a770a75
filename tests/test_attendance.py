"""Attendance (sql/0060_attendance.sql, policies/sessions.sql): recorded by the
session's specialist or an admin through the frontend's direct path (an update of
sessions.attendance under RLS, as PostgREST runs it), only after the end, only on a
confirmed session, correctable for 7 days; who and when stamped by the database;
every change audited, none in the status history. And every cancellation says who
cancelled and whether it was late.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from tests.conftest import RULES_ON
from tests.rls_fixtures import attempt
from tests.support import acting_as, create_person

NOW = datetime.now(timezone.utc)

NOT_ENDED = "Session {} has not ended yet; attendance is recorded after it ends."
CANCELLED = "Session {} is cancelled; attendance is recorded only for confirmed sessions."
FROZEN = "Attendance can no longer be changed 7 days after the session ended."
NOT_CLEARED = "Attendance, once recorded, can be corrected but not cleared."
STAMPED = "Who recorded attendance, and when, is set by the database."
NOT_AT_BOOKING = "Attendance is recorded after a session has ended, not when it is booked."


def record(db, person, session_id, value="attended"):
    return attempt(db, person, "update public.sessions set attendance = %s where id = %s returning id",
                   [value, session_id])


def stored(db, session_id) -> dict:
    return db.execute("select attendance, attendance_recorded_by, attendance_recorded_at, updated_at, status"
                      " from public.sessions where id = %s", [session_id]).fetchone()


def history_count(db, session_id) -> int:
    return db.execute("select count(*) as n from public.booking_status_history where session_id = %s",
                      [session_id]).fetchone()["n"]


def audit_rows(db, session_id) -> list[dict]:
    return db.execute("select action, actor_id, actor_role, old_values, new_values from public.audit_log"
                      " where entity_id = %s and action like 'attendance%%' order by id", [session_id]).fetchall()


@pytest.fixture
def ended(make_session, specialist_s, client_a):
    """A's session with S that ended two days ago."""
    return make_session(specialist_s, client_a, starts_in=timedelta(days=-2))


def test_specialist_records_and_corrects_attendance_and_each_change_is_audited(
        db, ended, specialist_s, client_a):
    before = history_count(db, ended["id"])
    with acting_as(db, specialist_s):
        first = db.execute("update public.sessions set attendance = 'no_show' where id = %s returning"
                           " attendance, attendance_recorded_by, attendance_recorded_at = now() as stamped_now",
                           [ended["id"]]).fetchall()
        second = db.execute("update public.sessions set attendance = 'attended' where id = %s returning attendance",
                            [ended["id"]]).fetchall()
        db.execute("reset role")  # look as the owner before the request is undone
        audit = audit_rows(db, ended["id"])
        history_after = history_count(db, ended["id"])
    assert first == [{"attendance": "no_show", "attendance_recorded_by": specialist_s.id, "stamped_now": True}]
    assert second == [{"attendance": "attended"}]
    assert audit == [
        {"action": "attendance_recorded", "actor_id": specialist_s.id, "actor_role": "specialist",
         "old_values": {"attendance": None}, "new_values": {"attendance": "no_show", "channel": "database"}},
        {"action": "attendance_corrected", "actor_id": specialist_s.id, "actor_role": "specialist",
         "old_values": {"attendance": "no_show"}, "new_values": {"attendance": "attended", "channel": "database"}},
    ]
    assert history_after == before, "attendance is not a status: the status history is unchanged"


def test_admin_records_attendance_on_any_session(db, ended, admin):
    result = record(db, admin, ended["id"], "no_show")
    assert result.error is None, result.message
    assert result.rowcount == 1


@pytest.mark.parametrize("caller", ["client_a", "client_b", "specialist_t"])
def test_others_change_nothing(db, ended, caller, request):
    person = request.getfixturevalue(caller)
    result = record(db, person, ended["id"])
    assert result.error is None, "RLS filters the update silently, as PostgREST answers 200 with no rows"
    assert result.rowcount == 0
    assert stored(db, ended["id"])["attendance"] is None


def test_anon_is_refused(db, ended, anon):
    result = record(db, anon, ended["id"])
    assert result.sqlstate == "42501"
    assert result.message.startswith("permission denied for table sessions")


def test_attendance_cannot_be_set_before_the_end(db, make_session, specialist_s, client_a):
    running = make_session(specialist_s, client_a, starts_in=timedelta(minutes=-10), minutes=50)
    result = record(db, specialist_s, running["id"])
    assert (result.sqlstate, result.message) == ("TB021", NOT_ENDED.format(running["id"]))
    assert stored(db, running["id"])["attendance"] is None


def test_attendance_cannot_be_set_on_a_cancelled_session(db, make_session, specialist_s, client_a, admin):
    session = make_session(specialist_s, client_a, starts_in=timedelta(days=3))
    db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
               [session["id"], client_a.id])
    for person in (specialist_s, admin):
        result = record(db, person, session["id"])
        assert (result.sqlstate, result.message) == ("TB020", CANCELLED.format(session["id"]))


def test_attendance_is_frozen_7_days_after_the_end(db, make_session, specialist_s, specialist_t, client_a, client_b,
                                                   admin):
    old = make_session(specialist_s, client_a, starts_in=timedelta(days=-7, minutes=-51), minutes=50)
    recent = make_session(specialist_t, client_b, starts_in=timedelta(days=-7, minutes=-49), minutes=50)
    for person in (specialist_s, admin):
        result = record(db, person, old["id"])
        assert (result.sqlstate, result.message) == ("TB022", FROZEN)
    assert record(db, specialist_t, recent["id"]).error is None, "ended 6 days 23:59 ago: still open"
    # For the service too: the freeze is the database's, not the API's.
    with pytest.raises(psycopg.Error, match=FROZEN) as caught:
        with db.transaction():
            db.execute("update public.sessions set attendance = 'no_show' where id = %s", [old["id"]])
    assert caught.value.sqlstate == "TB022"


def test_attendance_is_corrected_never_cleared(db, ended, specialist_s):
    db.execute("update public.sessions set attendance = 'attended' where id = %s", [ended["id"]])
    result = record(db, specialist_s, ended["id"], None)
    assert (result.sqlstate, result.message) == ("23514", NOT_CLEARED)
    with pytest.raises(psycopg.errors.CheckViolation, match=NOT_CLEARED):
        with db.transaction():
            db.execute("update public.sessions set attendance = null, attendance_recorded_by = null,"
                       " attendance_recorded_at = null where id = %s", [ended["id"]])


@pytest.mark.parametrize(("column", "value"), [
    ("attendance_recorded_by", None), ("attendance_recorded_at", NOW), ("special_requests", "x"),
    ("starts_at", NOW), ("status", "cancelled"),
])
def test_the_api_may_write_no_other_column(db, ended, specialist_s, column, value):
    result = attempt(db, specialist_s, f"update public.sessions set {column} = %s where id = %s",
                     [value, ended["id"]])
    assert result.sqlstate == "42501"
    assert result.message.startswith("permission denied for table sessions")


def test_who_and_when_cannot_be_forged_even_by_the_service(db, ended, specialist_s, client_a):
    db.execute("select set_config('app.actor_id', %s, true)", [str(specialist_s.id)])
    db.execute("update public.sessions set attendance = 'attended', attendance_recorded_by = %s,"
               " attendance_recorded_at = now() - interval '3 days' where id = %s", [client_a.id, ended["id"]])
    row = stored(db, ended["id"])
    assert row["attendance_recorded_by"] == specialist_s.id, "the actor, not what was sent"
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=STAMPED):
        with db.transaction():
            db.execute("update public.sessions set attendance_recorded_at = now() - interval '1 day' where id = %s",
                       [ended["id"]])


def test_a_new_session_carries_no_attendance_unless_imported(db, specialist_s, client_a):
    starts = NOW - timedelta(days=30)
    insert = ("insert into public.sessions (specialist_id, client_id, starts_at, ends_at, attendance,"
              " attendance_recorded_at) values (%s, %s, %s, %s, 'attended', now()) returning attendance")
    params = [specialist_s.id, client_a.id, starts, starts + timedelta(minutes=50)]
    with pytest.raises(psycopg.errors.CheckViolation, match=NOT_AT_BOOKING):
        with db.transaction():
            db.execute(RULES_ON)
            db.execute(insert, params)
    # The fixtures' connection imports with the booking rules off, as an operator would.
    assert db.execute(insert, params).fetchone() == {"attendance": "attended"}


# -- who cancelled, and was it late -------------------------------------------------------

def cancel(db, session_id, cancelled_by, *, channel: str | None = None) -> dict:
    with db.transaction():
        if channel:
            db.execute("select set_config('app.channel', %s, true)", [channel])
        row = db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)"
                         " returning cancelled_by_party, late", [session_id, cancelled_by]).fetchone()
        db.execute("select set_config('app.channel', '', true)")
    return row


@pytest.mark.parametrize(("who", "hours_ahead", "channel", "expected"), [
    ("client", 10, None, {"cancelled_by_party": "client", "late": True}),
    ("client", 47, None, {"cancelled_by_party": "client", "late": True}),
    ("client", 49, None, {"cancelled_by_party": "client", "late": False}),
    ("client", 10, "token-cancel", {"cancelled_by_party": "link", "late": True}),
    ("client", 10, "booking-cancel", {"cancelled_by_party": "client", "late": True}),
    ("specialist", 10, None, {"cancelled_by_party": "specialist", "late": False}),
    ("admin", 10, None, {"cancelled_by_party": "admin", "late": False}),
    ("system", 10, None, {"cancelled_by_party": "system", "late": False}),
])
def test_each_cancellation_says_who_cancelled_and_whether_it_was_late(
        db, make_session, specialist_s, client_a, admin, who, hours_ahead, channel, expected):
    session = make_session(specialist_s, client_a, starts_in=timedelta(hours=hours_ahead))
    by = {"client": client_a.id, "specialist": specialist_s.id, "admin": admin.id, "system": None}[who]
    assert cancel(db, session["id"], by, channel=channel) == expected


def test_the_late_window_is_the_practice_setting(db, make_session, specialist_s, client_a):
    first = make_session(specialist_s, client_a, starts_in=timedelta(hours=10))
    second = make_session(specialist_s, client_a, starts_in=timedelta(hours=30))
    db.execute("update private.practice_settings set late_cancellation_hours = 0")
    assert cancel(db, first["id"], client_a.id)["late"] is False, "0 = never late"
    db.execute("update private.practice_settings set late_cancellation_hours = 24")
    assert cancel(db, second["id"], client_a.id)["late"] is False, "30 hours ahead of a 24-hour window"
    with pytest.raises(psycopg.errors.CheckViolation, match="practice_settings_late_cancellation_hours_check"):
        with db.transaction():
            db.execute("update private.practice_settings set late_cancellation_hours = -1")


def test_a_frontend_cancellation_is_classified_and_cannot_classify_itself(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a, starts_in=timedelta(hours=5))
    forged = attempt(db, client_a, "insert into public.booking_cancellations (booking_id, cancelled_by, late)"
                     " values (%s, %s, false)", [session["id"], client_a.id])
    assert forged.sqlstate == "42501" and forged.message.startswith("permission denied for table booking_cancellations")
    with acting_as(db, client_a):
        row = db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)"
                         " returning cancelled_by_party, late", [session["id"], client_a.id]).fetchone()
    assert row == {"cancelled_by_party": "client", "late": True}


def test_the_service_cannot_misclassify_either(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a, starts_in=timedelta(hours=5))
    row = db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, cancelled_by_party, late)"
                     " values (%s, %s, 'specialist', false) returning cancelled_by_party, late",
                     [session["id"], client_a.id]).fetchone()
    assert row == {"cancelled_by_party": "client", "late": True}


def test_the_minimum_notice_still_refuses_inside_the_late_window(db, make_session, specialist_s, client_a):
    session = make_session(specialist_s, client_a, starts_in=timedelta(hours=1))
    db.execute("update private.practice_settings set cancellation_min_notice_hours = 2")
    with pytest.raises(psycopg.Error) as caught:
        with db.transaction():
            db.execute("insert into public.booking_cancellations (booking_id, cancelled_by) values (%s, %s)",
                       [session["id"], client_a.id])
    assert caught.value.sqlstate == "TB006"
    assert cancel(db, make_session(specialist_s, client_a, starts_in=timedelta(hours=3))["id"],
                  client_a.id) == {"cancelled_by_party": "client", "late": True}


def test_the_late_window_comes_from_the_environment_like_every_practice_setting(db):
    from shared.ops import practice_settings

    assert practice_settings.current(db)["late_cancellation_hours"] == 48
    assert practice_settings.apply(db, {"LATE_CANCELLATION_HOURS": "24"}) == {"late_cancellation_hours": "24"}
    assert practice_settings.current(db)["late_cancellation_hours"] == 24
    with pytest.raises(practice_settings.PracticeSettingsError) as refused:
        practice_settings.apply(db, {"LATE_CANCELLATION_HOURS": "-1"})
    assert str(refused.value) == "LATE_CANCELLATION_HOURS='-1' is out of range for late_cancellation_hours"


# -- through the functions: the link and booking-cancel classify as the database says ------------

def test_the_functions_cancellations_are_classified(functions_api, functions_env, committed_db, bookable_specialist):
    from urllib.parse import parse_qs, urlencode

    from tests.functions_fixtures import bearer, fetch

    client = create_person(committed_db, "client", timezone="Europe/Berlin")
    specialist = bookable_specialist(full_name="Dr Late Window", calendar_id="late.window@clinic.test")
    booked = []
    for days in (2, 3):
        answer = functions_api.booking_create.post_json(
            {"specialist_id": str(specialist.id), "starts_at": specialist.slot(days_ahead=days).isoformat()},
            headers=bearer(client))
        assert answer.status == 200, answer.text
        booked.append(answer.json())

    # The first through its emailed link (as the client), the second by the specialist through booking-cancel.
    query = functions_api.link(booked[0]["cancel_url"])
    form = {"body": urlencode({"token": parse_qs(query)["token"][0]}),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    # Both sessions lie inside a 10-day late window (the settings row is shared: restored after).
    committed_db.execute("update private.practice_settings set late_cancellation_hours = 240")
    try:
        done = (fetch(booked[0]["cancel_url"], "POST", **form) if functions_api.transport == "served"
                else functions_api.token_cancel.request("POST", query=query, **form))
        assert done.status == 200, done.text
        answer = functions_api.booking_cancel.post_json({"booking_id": booked[1]["session_id"], "reason": "Unwell"},
                                                        headers=bearer(specialist.person))
        assert answer.status == 200, answer.text
    finally:
        committed_db.execute("update private.practice_settings set late_cancellation_hours = 48")

    rows = committed_db.execute("select booking_id::text as id, cancelled_by_party, late"
                                " from public.booking_cancellations").fetchall()
    assert {r["id"]: (r["cancelled_by_party"], r["late"]) for r in rows} == {
        booked[0]["session_id"]: ("link", True),           # the client, through the emailed link
        booked[1]["session_id"]: ("specialist", False),    # late is the client's only
    }


def test_the_refusals_come_from_the_trigger_and_the_grant(db, make_session, specialist_s, client_a):
    """The checks above can fail: without the trigger attendance goes in before the end;
    with a wider grant the specialist rewrites another column."""
    running = make_session(specialist_s, client_a, starts_in=timedelta(minutes=-10), minutes=50)
    db.execute("create or replace function private.guard_attendance() returns trigger language plpgsql as"
               " $$ begin new.attendance_recorded_at := now(); return new; end $$")  # stamps, checks nothing
    db.execute("grant update (special_requests) on public.sessions to authenticated")
    assert record(db, specialist_s, running["id"]).rowcount == 1
    widened = attempt(db, specialist_s, "update public.sessions set special_requests = 'x' where id = %s",
                      [running["id"]])
    assert (widened.error, widened.rowcount) == (None, 1)
