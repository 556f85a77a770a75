"""Attendance and session_analytics over the frontend's real path (/rest/v1, PostgREST 12):
the PATCH a specialist's dashboard sends, the RPC its reports call, and the statuses a
frontend sees for each refusal. The rules themselves: tests/test_attendance.py and
tests/test_session_analytics.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.support import create_person

pytestmark = pytest.mark.slow


@pytest.fixture
def people(committed_db):
    return {
        "client": create_person(committed_db, "client"),
        "specialist": create_person(committed_db, "specialist", timezone="Europe/Berlin"),
        "other_specialist": create_person(committed_db, "specialist"),
        "admin": create_person(committed_db, "admin"),
    }


def add_session(committed_db, people, starts_in: timedelta) -> dict:
    starts = (datetime.now(timezone.utc) + starts_in).replace(microsecond=0)
    return committed_db.execute(
        "insert into public.sessions (specialist_id, client_id, starts_at, ends_at, price, currency)"
        " values (%s, %s, %s, %s, 90, 'EUR') returning *",
        [people["specialist"].id, people["client"].id, starts, starts + timedelta(minutes=50)]).fetchone()


def patch_attendance(rest, person, session_id, value="attended"):
    return rest(person).request("PATCH", "sessions", params={"id": f"eq.{session_id}", "select": "id,attendance"},
                                body={"attendance": value}, headers={"Prefer": "return=representation"})


def test_the_specialist_records_attendance_with_one_patch(rest, people, committed_db):
    ended = add_session(committed_db, people, timedelta(days=-1))
    answer = patch_attendance(rest, people["specialist"], ended["id"], "no_show")
    assert (answer.status, answer.json()) == (200, [{"id": str(ended["id"]), "attendance": "no_show"}])
    stored = committed_db.execute("select attendance_recorded_by from public.sessions where id = %s",
                                  [ended["id"]]).fetchone()
    assert stored["attendance_recorded_by"] == people["specialist"].id


def test_the_client_and_another_specialist_change_nothing(rest, people, committed_db):
    ended = add_session(committed_db, people, timedelta(days=-1))
    for who in ("client", "other_specialist"):
        answer = patch_attendance(rest, people[who], ended["id"])
        assert (answer.status, answer.json()) == (200, []), who
    assert committed_db.execute("select attendance from public.sessions where id = %s",
                                [ended["id"]]).fetchone()["attendance"] is None


def test_refusals_reach_the_frontend_as_sentences(rest, people, committed_db):
    upcoming = add_session(committed_db, people, timedelta(days=2))
    early = patch_attendance(rest, people["specialist"], upcoming["id"])
    assert (early.status, early.json()["code"], early.json()["message"]) == (
        400, "TB021", f"Session {upcoming['id']} has not ended yet; attendance is recorded after it ends.")
    other_column = rest(people["specialist"]).request("PATCH", "sessions", params={"id": f"eq.{upcoming['id']}"},
                                                      body={"special_requests": "x"})
    assert (other_column.status, other_column.json()["code"]) == (403, "42501")
    anon = rest(None).request("PATCH", "sessions", params={"id": f"eq.{upcoming['id']}"}, body={"attendance": "attended"})
    assert (anon.status, anon.json()["code"]) == (401, "42501")


def test_session_analytics_as_an_rpc(rest, people, committed_db):
    ended = add_session(committed_db, people, timedelta(days=-1))
    committed_db.execute("update public.sessions set attendance = 'attended' where id = %s", [ended["id"]])
    local_day = committed_db.execute("select (%s at time zone 'Europe/Berlin')::date as d",
                                     [ended["starts_at"]]).fetchone()["d"]
    body = {"from_date": str(local_day), "to_date": str(local_day)}

    mine = rest(people["specialist"]).request("POST", "rpc/session_analytics", body=body)
    assert mine.status == 200, mine.text
    assert [(r["specialist_id"], r["month"], r["sessions"], r["attended"], r["booked_minutes"], r["booked_value"],
             r["currency"], r["new_clients"]) for r in mine.json()] == [
        (str(people["specialist"].id), str(local_day.replace(day=1)), 1, 1, 50, 90, "EUR", 1)]

    everyone = rest(people["admin"]).request("POST", "rpc/session_analytics", body=body)
    assert everyone.status == 200
    assert {r["specialist_id"] for r in everyone.json()} == {str(people["specialist"].id),
                                                             str(people["other_specialist"].id)}

    client = rest(people["client"]).request("POST", "rpc/session_analytics", body=body)
    assert (client.status, client.json()) == (200, [])
    anon = rest(None).request("POST", "rpc/session_analytics", body=body)
    assert (anon.status, anon.json()["code"]) == (401, "42501")
    bad = rest(people["specialist"]).request("POST", "rpc/session_analytics",
                                             body={"from_date": "2026-02-01", "to_date": "2026-01-01"})
    assert (bad.status, bad.json()["message"]) == (400, "to_date (2026-01-01) is before from_date (2026-02-01).")
