"""The booking rules (sql/0019_booking_rules.sql), defined once in the database and
met at every door: a session written by a trusted writer (booking-create's door),
the recurring-booking API (PostgREST-style), the dispatcher, cancellation by
direct insert, and the free-slot read. Each former bypass is a regression test
through the door it used; the property test at the end checks available_slots
against the rules and against an oracle written here with zoneinfo.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import RULES_ON
from tests.dispatcher_support import add_recurrence, dispatch_sql, run_at, sessions_of, specialist_with_rate
from tests.support import Person, acting_as, create_person

UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")


# -- helpers ----------------------------------------------------------------------------

def bookable(conn: psycopg.Connection, *, zone: str = "Europe/London", lengths=((50, "90.00"),),
             windows=tuple((d, "09:00", "17:00") for d in range(7)), buffer: int = 0) -> Person:
    specialist = create_person(conn, "specialist", timezone=zone)
    for minutes, amount in lengths:
        conn.execute("""insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes,
                                                             effective_from)
                        values (%s, %s, 'EUR', %s, now() - interval '1 day')""", [specialist.id, amount, minutes])
    for day, start, end in windows:
        conn.execute("""insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
                        values (%s, %s, %s, %s)""", [specialist.id, day, start, end])
    if buffer:
        conn.execute("update public.profiles set buffer_minutes = %s where id = %s", [buffer, specialist.id])
    return specialist


def local(day: date, clock: str, zone: ZoneInfo = LONDON, fold: int = 0) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), zone).replace(fold=fold).astimezone(UTC)


def a_day_ahead(days: int = 5) -> date:
    return datetime.now(LONDON).date() + timedelta(days=days)


def insert_session(conn: psycopg.Connection, specialist: Person, client: Person, starts_at: datetime,
                   minutes: int = 50) -> dict:
    """A session written through the rules (booking-create's door is this insert)."""
    with conn.transaction():
        conn.execute(RULES_ON)
        return conn.execute(
            """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
               values (%s, %s, %s, %s) returning *""",
            [specialist.id, client.id, starts_at, starts_at + timedelta(minutes=minutes)]).fetchone()


def refusal(conn: psycopg.Connection, specialist: Person, client: Person, starts_at: datetime,
            minutes: int = 50) -> tuple[str, str] | None:
    """(SQLSTATE, sentence) when the rules refuse the session, None when they accept it (rolled back)."""
    try:
        with conn.transaction(force_rollback=True):
            insert_session(conn, specialist, client, starts_at, minutes)
    except psycopg.Error as exc:
        return exc.sqlstate, exc.diag.message_primary
    return None


def slots(conn: psycopg.Connection, caller: Person, specialist: Person, first: date, last: date,
          minutes: int | None = None) -> list[tuple[datetime, datetime]]:
    with acting_as(conn, caller):
        return [(r["starts_at"], r["ends_at"]) for r in conn.execute(
            "select * from public.available_slots(%s, %s, %s, %s)", [specialist.id, first, last, minutes])]


# -- the rules at the session door ------------------------------------------------------------

def test_each_rule_refuses_with_its_own_sqlstate_and_sentence(db):
    specialist = bookable(db, lengths=((50, "90"), (80, "130")), buffer=15)
    client, other = create_person(db, "client"), create_person(db, "client")
    day = a_day_ahead()
    db.execute("""insert into public.specialist_availability_exceptions
                    (specialist_id, exception_date, is_available, all_day, start_time, end_time)
                  values (%s, %s, false, false, '14:00', '15:00')""", [specialist.id, day])
    insert_session(db, specialist, other, local(day, "10:00"))
    busy_client = create_person(db, "client")
    insert_session(db, bookable(db), busy_client, local(day, "16:00"))

    assert refusal(db, specialist, client, datetime.now(UTC) + timedelta(hours=3)) == (
        "TB010", "Sessions must be booked at least 24 hours ahead")
    assert refusal(db, specialist, client, datetime.now(UTC) + timedelta(days=31)) == (
        "TB011", "Sessions can be booked at most 30 days ahead")
    assert refusal(db, specialist, client, local(day, "11:30"), minutes=45) == (
        "TB016", "The specialist offers sessions of 50 or 80 minutes, not 45")
    assert refusal(db, specialist, client, local(day, "16:30")) == (
        "TB012", "The slot is outside the specialist's working hours")
    assert refusal(db, specialist, client, local(day, "13:30")) == (
        "TB013", "The specialist is unavailable that day (availability exception)")
    assert refusal(db, specialist, client, local(day, "10:30")) == (
        "TB014", "The specialist already has a session at that time")
    # 10:00–10:50 plus the 15-minute buffer: 10:55 is taken, 11:05 is free.
    assert refusal(db, specialist, client, local(day, "10:55")) == (
        "TB014", "The specialist keeps 15 minutes free after each session")
    assert refusal(db, specialist, busy_client, local(day, "15:30")) == (
        "TB015", "The client already has a session at that time")
    assert refusal(db, specialist, client, local(day, "11:05"), minutes=80) is None
    assert refusal(db, client, specialist, local(day, "11:05")) == ("TB017", f"No specialist with id {client.id}")


def test_a_session_is_priced_at_the_rate_of_its_length(db):
    specialist = bookable(db, lengths=((50, "90.00"), (80, "130.00")))
    client = create_person(db, "client")
    short = insert_session(db, specialist, client, local(a_day_ahead(), "09:00"), minutes=50)
    long = insert_session(db, specialist, client, local(a_day_ahead(), "11:00"), minutes=80)
    assert (str(short["price"]), str(long["price"])) == ("90.00", "130.00")


def test_a_trusted_import_with_the_rules_off_still_keeps_the_buffer(db):
    specialist = bookable(db, buffer=20)
    client = create_person(db, "client")
    db.execute("set local app.booking_rules = 'off'")
    row = db.execute("""insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
                        values (%s, %s, now() - interval '2 days', now() - interval '2 days' + interval '50 minutes')
                        returning ends_at, blocked_until""", [specialist.id, client.id]).fetchone()
    assert row["blocked_until"] - row["ends_at"] == timedelta(minutes=20)


def test_api_roles_cannot_turn_the_rules_off(db, client_a):
    specialist = bookable(db)
    db.execute("set local app.booking_rules = 'off'")
    with pytest.raises(psycopg.Error, match="outside the specialist's weekly hours"):
        recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                         start_date=next_weekday(0), start_time="20:00")


def test_dst_fall_back_compares_instants_not_wall_clock_times(db):
    """Europe/London, Sunday 31 October 2027: 01:00–02:00 happens twice. A window
    00:00–01:30 is read as its first 01:30 (BST), so it ends at 00:30 UTC; a
    session from 00:45 BST running 90 minutes ends at 01:15 GMT — inside the window
    by its wall-clock times, outside it in real time — and is refused."""
    fall_back = date(2027, 10, 31)
    specialist = bookable(db, windows=[(0, "00:00", "01:30")], lengths=((90, "100"), (30, "40")))
    client = create_person(db, "client")
    at = datetime(2027, 10, 15, tzinfo=UTC)  # a fixed "now", two weeks before

    def problem(starts_at: datetime, minutes: int):
        row = db.execute("select * from private.slot_problem(%s, %s, %s, %s, null, %s)",
                         [specialist.id, client.id, starts_at, starts_at + timedelta(minutes=minutes), at]).fetchone()
        return row and row["reason"]

    across = local(fall_back, "00:45")
    assert across + timedelta(minutes=90) == datetime(2027, 10, 31, 1, 15, tzinfo=UTC)
    assert (across + timedelta(minutes=90)).astimezone(LONDON).strftime("%H:%M") == "01:15"  # wall clock: inside
    assert problem(across, 90) == "outside_hours"
    assert problem(local(fall_back, "00:00"), 90) is None  # 23:00–00:30 UTC: the window's real length
    # The second 01:00 (GMT) is after the window's end in real time.
    assert problem(local(fall_back, "01:00", fold=1), 30) == "outside_hours"


def test_spring_forward_window_is_an_hour_shorter(db):
    spring = date(2027, 3, 28)  # Europe/London: 01:00 GMT becomes 02:00 BST
    specialist = bookable(db, windows=[(0, "00:00", "03:00")], lengths=((60, "80"),))
    at = datetime(2027, 3, 1, tzinfo=UTC)
    client = create_person(db, "client")
    hours = db.execute("select private.specialist_hours(%s, 'Europe/London', %s, %s) as h",
                       [specialist.id, spring, spring]).fetchone()["h"]
    (stretch,) = hours
    assert (stretch.lower, stretch.upper) == (datetime(2027, 3, 28, 0, 0, tzinfo=UTC),
                                              datetime(2027, 3, 28, 2, 0, tzinfo=UTC))
    late = local(spring, "03:00") - timedelta(minutes=60)  # 02:00 BST = 01:00 UTC: fits exactly
    assert db.execute("select count(*) as n from private.slot_problem(%s, %s, %s, %s, null, %s)",
                      [specialist.id, client.id, late, late + timedelta(minutes=60), at]).fetchone()["n"] == 0


def test_a_partial_available_exception_replaces_the_days_windows(db):
    specialist = bookable(db)
    client = create_person(db, "client")
    day = a_day_ahead()
    db.execute("""insert into public.specialist_availability_exceptions
                    (specialist_id, exception_date, is_available, all_day, start_time, end_time)
                  values (%s, %s, true, false, '18:00', '20:00')""", [specialist.id, day])
    assert refusal(db, specialist, client, local(day, "10:00"))[0] == "TB012"
    assert refusal(db, specialist, client, local(day, "18:30")) is None
    assert refusal(db, specialist, client, local(day + timedelta(days=1), "10:00")) is None


# -- buffers ------------------------------------------------------------------------------------

def test_only_specialists_keep_a_buffer_and_they_set_it_themselves(db, client_a, specialist_s):
    with acting_as(db, specialist_s):
        db.execute("update public.profiles set buffer_minutes = 30 where id = %s", [specialist_s.id])
        assert db.execute("select buffer_minutes from public.profiles where id = %s",
                          [specialist_s.id]).fetchone()["buffer_minutes"] == 30
    with acting_as(db, client_a), pytest.raises(psycopg.errors.CheckViolation,
                                                match="Only specialists keep a buffer between sessions."):
        db.execute("update public.profiles set buffer_minutes = 30 where id = %s", [client_a.id])
    with acting_as(db, specialist_s), pytest.raises(psycopg.errors.CheckViolation, match="profiles_buffer_minutes_check"):
        db.execute("update public.profiles set buffer_minutes = 121 where id = %s", [specialist_s.id])


RACERS = 30


def test_thirty_concurrent_bookings_with_buffers_give_one_session(committed_db, database_url):
    """Fifteen racers want 10:00, fifteen want 10:50 (right after it, inside the 15-minute
    buffer): the rules and the buffer-aware constraint let exactly one through."""
    specialist = bookable(committed_db, buffer=15)
    clients = [create_person(committed_db, "client") for _ in range(RACERS)]
    day = a_day_ahead(6)
    starts = [local(day, "10:00") if i % 2 else local(day, "10:50") for i in range(RACERS)]
    barrier = threading.Barrier(RACERS, timeout=30)

    def racer(i: int):
        with psycopg.connect(database_url, autocommit=True,
                             options="-c deadlock_timeout=100ms -c lock_timeout=20s") as conn:
            barrier.wait()
            try:
                conn.execute("""insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
                                values (%s, %s, %s, %s)""",
                             [specialist.id, clients[i].id, starts[i], starts[i] + timedelta(minutes=50)])
            except psycopg.Error as exc:
                return exc.sqlstate
            return "ok"

    with ThreadPoolExecutor(RACERS) as pool:
        outcomes = list(pool.map(racer, range(RACERS)))

    assert outcomes.count("ok") == 1, outcomes
    assert set(outcomes) <= {"ok", "TB014", "23P01"}  # the rules' sentence, or the constraint's
    stored = committed_db.execute("select count(*) as n from public.sessions where specialist_id = %s",
                                  [specialist.id]).fetchone()["n"]
    assert stored == 1


# -- the client's cancellation notice at every door ---------------------------------------------

def test_direct_cancellation_by_the_client_inside_the_notice_is_refused(db, client_a, specialist_s, make_session):
    db.execute("update private.practice_settings set cancellation_min_notice_hours = 24")
    session = make_session(specialist_s, client_a, starts_in=timedelta(hours=3))
    with acting_as(db, client_a), pytest.raises(psycopg.Error) as refused:
        db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, 'x')",
                   [session["id"], client_a.id])
    assert (refused.value.sqlstate, refused.value.diag.message_primary) == (
        "TB006", "Sessions must be cancelled at least 24 hours ahead; please contact your specialist.")
    assert db.execute("select status from public.sessions where id = %s", [session["id"]]).fetchone()["status"] == \
        "confirmed"
    # The specialist is exempt.
    with acting_as(db, specialist_s):
        db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, 'x')",
                   [session["id"], specialist_s.id])
        assert db.execute("select status from public.sessions where id = %s",
                          [session["id"]]).fetchone()["status"] == "cancelled"


def test_outside_the_notice_the_client_cancels_directly(db, client_a, specialist_s, make_session):
    db.execute("update private.practice_settings set cancellation_min_notice_hours = 24")
    session = make_session(specialist_s, client_a, starts_in=timedelta(hours=30))
    with acting_as(db, client_a):
        db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, 'x')",
                   [session["id"], client_a.id])
        assert db.execute("select status from public.sessions where id = %s",
                          [session["id"]]).fetchone()["status"] == "cancelled"


# -- recurring bookings through the API ---------------------------------------------------------

def recurring_insert(conn, person: Person, **values):
    """An insert as `person` the way PostgREST makes it, kept (the identity is dropped after it)."""
    columns = ", ".join(values)
    with conn.transaction():
        conn.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                     [person.db_role, json.dumps(person.claims)])
        row = conn.execute(f"insert into public.recurring_bookings ({columns}) values "
                           f"({', '.join(['%s'] * len(values))}) returning *", list(values.values())).fetchone()
        # On a refusal the savepoint's rollback drops the identity; on success, this does.
        conn.execute("reset role; select set_config('request.jwt.claims', '', true)")
        return row


def next_weekday(weekday: int, after: int = 3) -> date:
    """The first date at least `after` days ahead that falls on `weekday` (0 = Monday)."""
    day = date.today() + timedelta(days=after)
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def test_seed_002_recurring_insert_with_next_booking_date_works(db, client_a):
    specialist = bookable(db)
    start = next_weekday(0)
    row = recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                           start_date=start, end_date=start + timedelta(weeks=16), is_active=True,
                           next_booking_date=start)
    assert (row["next_booking_date"], row["start_time"], row["duration_minutes"]) == (start, time(10), 50)


@pytest.mark.parametrize(("values", "sqlstate", "message"), [
    ({"start_time": "18:00"}, "TB012",
     "The recurring time ({day} at 18:00 for 50 minutes, Europe/London) is outside the specialist's weekly hours."),
    ({"duration_minutes": 45}, "TB016", "The specialist offers sessions of 50 minutes, not 45."),
    ({"next_booking_date": "before"}, "23514", "next_booking_date ({before}) is before start_date ({start})."),
    ({"next_booking_date": "off"}, "23514",
     "next_booking_date ({off}) is not on the weekly cadence from start_date ({start})."),
])
def test_recurring_bookings_obey_the_booking_rules(db, client_a, values, sqlstate, message):
    specialist = bookable(db)
    start = next_weekday(0)
    dates = {"before": start - timedelta(days=7), "off": start + timedelta(days=3)}
    values = {k: dates.get(v, v) for k, v in values.items()}
    with pytest.raises(psycopg.Error) as refused:
        recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                         start_date=start, **values)
    assert refused.value.sqlstate == sqlstate
    assert refused.value.diag.message_primary == message.format(
        day=start.strftime("%A"), before=dates["before"], off=dates["off"], start=start)


def test_anonymous_sign_ins_and_specialists_cannot_make_recurring_bookings(db, specialist_t):
    specialist = bookable(db)
    anonymous = create_person(db, "client")
    anonymous = Person(anonymous.id, "client", anonymous.email, {"is_anonymous": True})
    for caller, message in ((anonymous, "Anonymous sign-ins cannot make recurring bookings; sign up first."),
                            (specialist_t, "Only clients make recurring bookings.")):
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            recurring_insert(db, caller, user_id=caller.id, specialist_id=specialist.id, frequency="weekly",
                             start_date=next_weekday(0))
        assert refused.value.diag.message_primary == message


def test_a_client_has_at_most_three_active_recurrences_with_one_specialist(db, client_a):
    specialist = bookable(db)
    for weeks in range(3):
        recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                         start_date=next_weekday(0) + timedelta(weeks=weeks))
    with pytest.raises(psycopg.errors.CheckViolation,
                       match="A client can have at most 3 active recurring bookings with one specialist."):
        recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                         start_date=next_weekday(1))


def test_a_specialist_can_end_a_recurrence_aimed_at_them_and_change_nothing_else(db, client_a):
    specialist = bookable(db)
    specialist = Person(specialist.id, "specialist", specialist.email)
    row = recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                           start_date=next_weekday(0))
    with acting_as(db, specialist), pytest.raises(psycopg.errors.InsufficientPrivilege,
                                                  match="A specialist can only end a recurring booking"):
        db.execute("update public.recurring_bookings set start_time = '11:00' where id = %s", [row["id"]])
    with acting_as(db, specialist):
        ended = db.execute("update public.recurring_bookings set is_active = false where id = %s returning is_active",
                           [row["id"]]).fetchone()
        assert ended == {"is_active": False}


def test_the_api_recurrence_that_used_to_bypass_the_rules_becomes_no_session_at_dispatch(db, client_a):
    """The regression of the issue: a recurrence made through the API outside the
    specialist's hours is refused at once; one made inside them whose hours later
    change is reported by the dispatcher, which creates nothing for it."""
    specialist = specialist_with_rate(db, hours=("09:00", "17:00"))
    start = next_weekday(2)
    with pytest.raises(psycopg.Error, match="outside the specialist's weekly hours"):
        recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                         start_date=start, start_time="07:00", duration_minutes=50)
    row = recurring_insert(db, client_a, user_id=client_a.id, specialist_id=specialist.id, frequency="weekly",
                           start_date=start, start_time="10:00", duration_minutes=50)
    db.execute("update public.availability_windows set start_time = '12:00' where specialist_id = %s",
               [specialist.id])

    outcome = dispatch_sql(db, datetime.now(UTC), horizon_days=14)

    assert [(r["outcome"], r["error"]) for r in outcome if r["recurring_id"] == row["id"]][0] == (
        "error", "The slot is outside the specialist's working hours")
    assert sessions_of(db, row["id"]) == []


# -- changes over booked sessions ---------------------------------------------------------------

def test_an_exception_over_a_booked_session_cancels_nothing_and_shows_it_to_the_specialist(
        db, client_a, specialist_t):
    specialist = bookable(db)
    specialist = Person(specialist.id, "specialist", specialist.email)
    day = a_day_ahead()
    session = insert_session(db, specialist, client_a, local(day, "10:00"))
    db.execute("""insert into public.specialist_availability_exceptions (specialist_id, exception_date, reason)
                  values (%s, %s, 'sick_leave')""", [specialist.id, day])

    assert db.execute("select status from public.sessions where id = %s", [session["id"]]).fetchone()["status"] == \
        "confirmed"
    with acting_as(db, specialist):
        assert [(r["id"], r["problem"]) for r in db.execute("select * from public.sessions_needing_attention")] == \
            [(session["id"], "exception")]
    for other in (specialist_t, client_a):
        with acting_as(db, other):
            rows = db.execute("select * from public.sessions_needing_attention").fetchall()
            assert [r["id"] for r in rows] == ([session["id"]] if other is client_a else [])


# -- available_slots ----------------------------------------------------------------------------

def test_free_slots_step_by_length_plus_buffer_and_skip_taken_times(db, anon, client_a):
    specialist = bookable(db, windows=[((a_day_ahead().weekday() + 1) % 7, "09:00", "13:00")], buffer=10)
    day = a_day_ahead()
    other = create_person(db, "client")
    insert_session(db, specialist, other, local(day, "10:00"))

    offered = slots(db, anon, specialist, day, day)

    # Grid 09:00, 10:00, 11:00, 12:00 (50 + 10); 10:00 is taken; 12:00 ends 12:50 (inside).
    assert [s.astimezone(LONDON).strftime("%H:%M") for s, _ in offered] == ["09:00", "11:00", "12:00"]
    assert all(e - s == timedelta(minutes=50) for s, e in offered)
    # A signed-in client never sees a slot that clashes with their own sessions.
    insert_session(db, bookable(db), client_a, local(day, "11:00"))
    mine = slots(db, client_a, specialist, day, day)
    assert [s.astimezone(LONDON).strftime("%H:%M") for s, _ in mine] == ["09:00", "12:00"]


def test_available_slots_answers_only_start_and_end(db, anon):
    specialist = bookable(db)
    with acting_as(db, anon):
        cursor = db.execute("select * from public.available_slots(%s, %s, %s)",
                            [specialist.id, a_day_ahead(), a_day_ahead()])
        assert [column.name for column in cursor.description] == ["starts_at", "ends_at"]


@pytest.mark.parametrize(("first", "last", "minutes", "sqlstate", "message"), [
    (5, 4, None, "22023", "to_date ({last}) is before from_date ({first})."),
    (1, 63, None, "22023", "At most 62 days of free slots can be asked for at once; {first} to {last} is 63 days."),
    (2, 3, 45, "22023", "The specialist offers sessions of 50 minutes, not 45."),
])
def test_available_slots_refuses_bad_ranges_and_lengths_with_a_sentence(db, anon, first, last, minutes, sqlstate,
                                                                        message):
    specialist = bookable(db)
    first_day, last_day = a_day_ahead(first), a_day_ahead(last)
    with acting_as(db, anon), pytest.raises(psycopg.Error) as refused:
        db.execute("select * from public.available_slots(%s, %s, %s, %s)",
                   [specialist.id, first_day, last_day, minutes])
    assert (refused.value.sqlstate, refused.value.diag.message_primary) == (
        sqlstate, message.format(first=first_day, last=last_day))


def test_available_slots_never_answers_more_than_a_thousand_rows_silently(db, anon):
    db.execute("update private.practice_settings set slot_step_minutes = 5, booking_max_advance_days = 90")
    specialist = bookable(db, windows=[(d, "00:00", "23:55") for d in range(7)], lengths=((15, "20"),))
    with acting_as(db, anon), pytest.raises(psycopg.Error, match="More than 1,000 free slots between"):
        db.execute("select * from public.available_slots(%s, %s, %s)", [specialist.id, a_day_ahead(2), a_day_ahead(8)])


def test_available_slots_of_someone_who_is_not_a_specialist_is_not_found(db, anon, client_a):
    with acting_as(db, anon), pytest.raises(psycopg.Error) as refused:
        db.execute("select * from public.available_slots(%s, %s, %s)", [client_a.id, a_day_ahead(), a_day_ahead()])
    assert (refused.value.sqlstate, refused.value.diag.message_primary) == (
        "PT404", f"No specialist with id {client_a.id}.")
