"""Defaults the database fills in: a client profile for every new user, a
complete session from its four essential columns, and the recurring-booking
values that depend on the specialist (time of day, duration, timezone)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, time, timedelta, timezone

import psycopg
import pytest

from tests.data_layer import insert_row, refused

UTC = timezone.utc


# -- profiles --------------------------------------------------------------------

def new_user(db, **columns) -> uuid.UUID:
    user_id = uuid.uuid4()
    names = ", ".join(["id", *columns])
    values = [user_id, *(json.dumps(v) if isinstance(v, dict) else v for v in columns.values())]
    db.execute(f"insert into auth.users ({names}) values ({', '.join(['%s'] * len(values))})", values)
    return user_id


def profile(db, user_id) -> dict | None:
    return db.execute("select * from public.profiles where id = %s", [user_id]).fetchone()


def test_every_new_user_gets_a_client_profile(db):
    user_id = new_user(db, email="new.person@example.test", raw_user_meta_data={"full_name": "New Person"})

    created = profile(db, user_id)
    assert created is not None, "the profile is created with the user"
    assert (created["role"], created["email"], created["full_name"], created["timezone"]) == \
        ("client", "new.person@example.test", "New Person", "UTC")


@pytest.mark.parametrize("columns", [
    pytest.param({"raw_user_meta_data": {"role": "admin"}}, id="user-metadata-admin"),
    pytest.param({"raw_user_meta_data": {"role": "specialist"}}, id="user-metadata-specialist"),
    pytest.param({"raw_app_meta_data": {"role": "admin"}}, id="app-metadata-admin"),
    pytest.param({"role": "admin"}, id="auth-role-column"),
    pytest.param({"is_super_admin": True}, id="super-admin-flag"),
])
def test_a_new_users_profile_is_a_client_whatever_they_claim(db, columns):
    user_id = new_user(db, email="claims@example.test", **columns)

    assert profile(db, user_id)["role"] == "client", "sign-up data never makes anyone more than a client"


def test_every_user_of_a_bulk_insert_gets_a_profile(db):
    ids = [uuid.uuid4() for _ in range(3)]
    db.execute("insert into auth.users (id) select unnest(%s::uuid[])", [ids])

    count = db.execute("select count(*) as n from public.profiles where id = any(%s)", [ids]).fetchone()["n"]
    assert count == 3


# -- sessions --------------------------------------------------------------------

def test_a_session_needs_only_its_parties_and_times(db, specialist_s, client_a):
    starts_at = datetime.now(UTC) + timedelta(days=3)

    row = insert_row(db, "sessions", {"specialist_id": specialist_s.id, "client_id": client_a.id,
                                      "starts_at": starts_at, "ends_at": starts_at + timedelta(minutes=50)})

    now, year = db.execute("select now() as now, extract(year from now() at time zone 'UTC')::int as year") \
        .fetchone().values()
    assert row["id"] is not None
    assert row["status"] == "confirmed"
    assert row["session_type"] == "initial"
    assert re.fullmatch(r"BK-\d{4}-\d{6,}", row["booking_reference"]), row["booking_reference"]
    assert row["booking_reference"].startswith(f"BK-{year}-"), "the reference carries the year it was made"
    assert row["created_at"] == row["updated_at"] == now
    assert (row["cancelled_at"], row["cancelled_by"], row["cancellation_reason"]) == (None, None, None)


def test_booking_references_are_unique(db, specialist_s, client_a):
    starts = [datetime.now(UTC) + timedelta(days=3, hours=h) for h in range(5)]
    rows = [insert_row(db, "sessions", {"specialist_id": specialist_s.id, "client_id": client_a.id,
                                        "starts_at": s, "ends_at": s + timedelta(minutes=50)}) for s in starts]

    assert len({r["booking_reference"] for r in rows}) == 5, "each session gets its own reference"

    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        with db.transaction():
            # Replica mode switches the guard trigger off: what is left is the unique key.
            db.execute("set local session_replication_role = replica")
            db.execute("update public.sessions set booking_reference = %s where id = %s",
                       [rows[0]["booking_reference"], rows[1]["id"]])
    assert caught.value.diag.constraint_name == "sessions_booking_reference_key"


def test_booking_references_past_a_million_keep_every_digit(db):
    # Sequences are not transactional: this moves the counter for the rest of the run, harmlessly.
    db.execute("select setval('private.booking_reference_seq', 999999)")
    references = [db.execute("select private.next_booking_reference() as r").fetchone()["r"] for _ in range(2)]

    year = datetime.now(UTC).year
    assert references == [f"BK-{year}-1000000", f"BK-{year}-1000001"], "no digit may be cut off"


# -- recurring bookings -----------------------------------------------------------------

def add_rate(db, specialist, minutes: int, starts: timedelta, ends: timedelta | None) -> None:
    db.execute(
        "insert into public.specialist_rates (specialist_id, amount, duration_minutes, effective_from, effective_to) "
        "values (%s, 80, %s, now() + %s, now() + %s)", [specialist.id, minutes, starts, ends])


def recurring(db, specialist, client, **columns) -> dict:
    return insert_row(db, "recurring_bookings", {"user_id": client.id, "specialist_id": specialist.id,
                                                  "frequency": "weekly", "start_date": date(2031, 3, 3), **columns})


def test_a_recurring_booking_takes_its_defaults_from_the_specialist(db, specialist_s, client_a):
    add_rate(db, specialist_s, 30, timedelta(days=-60), timedelta(days=-30))  # expired
    add_rate(db, specialist_s, 50, timedelta(days=-30), timedelta(days=30))   # current
    add_rate(db, specialist_s, 90, timedelta(days=30), None)                  # not yet

    row = recurring(db, specialist_s, client_a)

    assert row["next_booking_date"] == date(2031, 3, 3), "the first occurrence is the start date"
    assert row["start_time"] == time(10, 0)
    assert row["duration_minutes"] == 50, "the duration of the rate in effect now"
    assert row["timezone"] == "Europe/London", "the specialist's timezone"
    assert row["is_active"] is True


def test_a_recurring_booking_keeps_the_values_it_is_given(db, specialist_s, client_a):
    add_rate(db, specialist_s, 50, timedelta(days=-30), None)

    row = recurring(db, specialist_s, client_a, start_time=time(18, 30), duration_minutes=80,
                    timezone="Asia/Tokyo", next_booking_date=date(2031, 3, 10))

    assert (row["start_time"], row["duration_minutes"], row["timezone"], row["next_booking_date"]) == \
        (time(18, 30), 80, "Asia/Tokyo", date(2031, 3, 10))


@pytest.mark.parametrize("rates", [
    pytest.param([], id="no-rate"),
    pytest.param([(50, timedelta(days=30), None)], id="only-a-future-rate"),
    pytest.param([(50, timedelta(days=-60), timedelta(days=-1))], id="only-an-expired-rate"),
])
def test_a_recurring_booking_without_rate_or_duration_is_refused(db, specialist_s, client_a, rates):
    for minutes, starts, ends in rates:
        add_rate(db, specialist_s, minutes, starts, ends)

    error = refused(db, "insert into public.recurring_bookings (user_id, specialist_id, frequency, start_date) "
                        "values (%s, %s, 'weekly', '2031-03-03')", [client_a.id, specialist_s.id])

    assert isinstance(error, psycopg.errors.NotNullViolation)
    assert error.diag.message_primary == \
        f"Specialist {specialist_s.id} has no current rate; give duration_minutes."


def test_a_recurring_booking_without_a_rate_is_accepted_with_a_duration(db, specialist_s, client_a):
    row = recurring(db, specialist_s, client_a, duration_minutes=45)

    assert row["duration_minutes"] == 45
