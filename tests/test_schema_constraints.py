"""Constraints of the schema: bad values are refused by the named constraint with
PostgreSQL's own message, and the good values next to them are accepted."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from tests.storage_fixtures import recording_path
from tests.data_layer import cancel, insert_row, refused

UTC = timezone.utc
# Far in the future, so that "has the session started" never depends on today.
T0 = datetime(2031, 3, 3, 10, 0, tzinfo=UTC)
RATE_FROM = datetime(2030, 1, 1, tzinfo=UTC)
RATE_TO = datetime(2030, 7, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def insert_statement(table: str, values: dict):
    return (
        sql.SQL("insert into {} ({}) values ({})").format(
            sql.Identifier("public", table),
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        ),
        list(values.values()),
    )


def session_values(specialist, client, starts_at: datetime = T0, minutes: int = 50, **extra) -> dict:
    return {"specialist_id": specialist.id, "client_id": client.id, "starts_at": starts_at,
            "ends_at": starts_at + timedelta(minutes=minutes), **extra}


@pytest.fixture
def valid_rows(db, specialist_s, client_a) -> dict[str, dict]:
    """One acceptable row per table; each bad-value case changes one thing in it."""
    earlier = insert_row(db, "sessions", session_values(specialist_s, client_a, T0 - timedelta(days=7)))
    return {
        "sessions": session_values(specialist_s, client_a),
        "specialist_rates": {"specialist_id": specialist_s.id, "amount": 80, "duration_minutes": 50,
                             "effective_from": RATE_FROM},
        "availability_windows": {"specialist_id": specialist_s.id, "day_of_week": 1,
                                 "start_time": time(9), "end_time": time(17)},
        "specialist_availability_exceptions": {"specialist_id": specialist_s.id,
                                               "exception_date": date(2031, 3, 10), "reason": "vacation"},
        "booking_packages": {"specialist_id": specialist_s.id, "name": "Five sessions", "session_count": 5,
                             "price": 400, "discount_percentage": 10, "valid_for_days": 90},
        "recurring_bookings": {"user_id": client_a.id, "specialist_id": specialist_s.id, "frequency": "weekly",
                               "start_date": date(2031, 3, 3), "duration_minutes": 50},
        "meeting_recordings": {"booking_id": earlier["id"], "storage_path": recording_path(earlier, "one.mp4"),
                               "file_format": "mp4", "duration_seconds": 3000, "storage_size_bytes": 1_000_000},
        "audit_log": {"action": "session_created", "entity_type": "session"},
    }


# -- check constraints: table, bad values -> constraint ----------------------------

CHECK_CASES = [
    # status values
    ("sessions", {"status": "pending"}, "sessions_status_check"),
    ("sessions", {"status": "completed"}, "sessions_status_check"),
    ("sessions", {"status": "CONFIRMED"}, "sessions_status_check"),
    ("sessions", {"status": ""}, "sessions_status_check"),
    ("sessions", {"session_type": "group"}, "sessions_session_type_check"),
    # a cancelled status needs its cancellation time
    ("sessions", {"cancelled_at": "2030-01-01T00:00:00+00"}, "sessions_cancellation_check"),
    # ends after starts
    ("sessions", {"ends_at": T0}, "sessions_time_check"),
    ("sessions", {"ends_at": T0 - MINUTE}, "sessions_time_check"),
    ("sessions", {"price": -1}, "sessions_price_check"),
    ("sessions", {"currency": "usd"}, "sessions_currency_check"),
    ("availability_windows", {"end_time": time(9)}, "availability_windows_time_check"),
    ("availability_windows", {"end_time": time(8)}, "availability_windows_time_check"),
    ("availability_windows", {"day_of_week": 7}, "availability_windows_day_of_week_check"),
    ("availability_windows", {"day_of_week": -1}, "availability_windows_day_of_week_check"),
    ("specialist_rates", {"effective_to": RATE_FROM}, "specialist_rates_period_check"),
    ("specialist_rates", {"effective_to": RATE_FROM - MINUTE}, "specialist_rates_period_check"),
    ("recurring_bookings", {"end_date": date(2031, 3, 2)}, "recurring_bookings_dates_check"),
    # discount 0-100
    ("booking_packages", {"discount_percentage": -0.01}, "booking_packages_discount_percentage_check"),
    ("booking_packages", {"discount_percentage": 100.01}, "booking_packages_discount_percentage_check"),
    ("booking_packages", {"discount_percentage": 150}, "booking_packages_discount_percentage_check"),
    # frequency values
    ("recurring_bookings", {"frequency": "daily"}, "recurring_bookings_frequency_check"),
    ("recurring_bookings", {"frequency": "Weekly"}, "recurring_bookings_frequency_check"),
    ("recurring_bookings", {"frequency": ""}, "recurring_bookings_frequency_check"),
    # exception reason values
    ("specialist_availability_exceptions", {"reason": "holiday"},
     "specialist_availability_exceptions_reason_check"),
    ("specialist_availability_exceptions", {"reason": "Vacation"},
     "specialist_availability_exceptions_reason_check"),
    # partial-day exceptions need start < end
    ("specialist_availability_exceptions", {"all_day": False},
     "specialist_availability_exceptions_hours_check"),
    ("specialist_availability_exceptions", {"all_day": False, "start_time": time(9)},
     "specialist_availability_exceptions_hours_check"),
    ("specialist_availability_exceptions", {"all_day": False, "end_time": time(12)},
     "specialist_availability_exceptions_hours_check"),
    ("specialist_availability_exceptions", {"all_day": False, "start_time": time(12), "end_time": time(12)},
     "specialist_availability_exceptions_hours_check"),
    ("specialist_availability_exceptions", {"all_day": False, "start_time": time(14), "end_time": time(12)},
     "specialist_availability_exceptions_hours_check"),
    # file_format values
    ("meeting_recordings", {"file_format": "avi"}, "meeting_recordings_file_format_check"),
    ("meeting_recordings", {"file_format": "MP4"}, "meeting_recordings_file_format_check"),
    ("meeting_recordings", {"file_format": ""}, "meeting_recordings_file_format_check"),
    # sizes and durations positive
    ("meeting_recordings", {"duration_seconds": 0}, "meeting_recordings_duration_check"),
    ("meeting_recordings", {"duration_seconds": -1}, "meeting_recordings_duration_check"),
    ("meeting_recordings", {"storage_size_bytes": 0}, "meeting_recordings_size_check"),
    ("meeting_recordings", {"storage_size_bytes": -1}, "meeting_recordings_size_check"),
    ("specialist_rates", {"duration_minutes": 0}, "specialist_rates_duration_check"),
    ("specialist_rates", {"duration_minutes": -50}, "specialist_rates_duration_check"),
    ("specialist_rates", {"amount": -1}, "specialist_rates_amount_check"),
    ("recurring_bookings", {"duration_minutes": 0}, "recurring_bookings_duration_check"),
    ("recurring_bookings", {"duration_minutes": -50}, "recurring_bookings_duration_check"),
    ("booking_packages", {"session_count": 0}, "booking_packages_session_count_check"),
    ("booking_packages", {"valid_for_days": 0}, "booking_packages_valid_for_days_check"),
    ("booking_packages", {"price": -1}, "booking_packages_price_check"),
    ("audit_log", {"status": "ok"}, "audit_log_status_check"),
]


@pytest.mark.parametrize(
    "table, bad, constraint",
    [pytest.param(t, b, c, id=f"{t}-{'-'.join(f'{k}={v}' for k, v in b.items())}") for t, b, c in CHECK_CASES],
)
def test_bad_values_are_refused_by_their_check_constraint(db, valid_rows, table, bad, constraint):
    error = refused(db, *insert_statement(table, valid_rows[table] | bad))

    assert isinstance(error, psycopg.errors.CheckViolation), f"{bad} must be refused by a check constraint"
    assert error.diag.constraint_name == constraint
    assert error.diag.message_primary == f'new row for relation "{table}" violates check constraint "{constraint}"'


ACCEPTED_CASES = [
    ("sessions", {}),
    ("sessions", {"session_type": "follow_up"}),
    ("sessions", {"session_type": "emergency"}),
    ("booking_packages", {"discount_percentage": 0}),
    ("booking_packages", {"discount_percentage": 100}),
    ("booking_packages", {"discount_percentage": 33.33}),
    ("recurring_bookings", {"frequency": "weekly"}),
    ("recurring_bookings", {"frequency": "biweekly"}),
    ("recurring_bookings", {"frequency": "monthly"}),
    ("recurring_bookings", {"end_date": date(2031, 3, 3)}),
    *[("specialist_availability_exceptions", {"reason": reason})
      for reason in ("vacation", "sick_leave", "personal", "training", "conference", "other")],
    ("specialist_availability_exceptions", {"all_day": False, "start_time": time(9), "end_time": time(12)}),
    *[("meeting_recordings", {"file_format": fmt}) for fmt in ("mp4", "webm", "mov", "mkv")],
    ("meeting_recordings", {"duration_seconds": 1, "storage_size_bytes": 1}),
    ("specialist_rates", {"effective_to": RATE_TO}),
    ("availability_windows", {"day_of_week": 0}),
    ("availability_windows", {"day_of_week": 6}),
    ("audit_log", {"status": "success_with_errors"}),
    ("audit_log", {"status": "failure"}),
]


@pytest.mark.parametrize(
    "table, good",
    [pytest.param(t, g, id=f"{t}-{'-'.join(f'{k}={v}' for k, v in g.items()) or 'as is'}") for t, g in ACCEPTED_CASES],
)
def test_good_values_are_accepted(db, valid_rows, table, good):
    row = insert_row(db, table, valid_rows[table] | good)

    stored_row = db.execute(sql.SQL("select count(*) as n from {} where id = %s").format(
        sql.Identifier("public", table)), [row["id"]]).fetchone()
    assert stored_row["n"] == 1, f"a {table} row with {good} must be stored"
    for column, value in good.items():
        stored = row[column]
        assert float(stored) == value if isinstance(value, float) else stored == value


# -- timezones: IANA names only ----------------------------------------------------

IANA_NAMES = ["UTC", "Europe/London", "America/Argentina/Buenos_Aires", "America/Port-au-Prince",
              "Etc/GMT+3", "Asia/Kolkata"]
NOT_IANA_NAMES = [
    pytest.param("EST", id="abbreviation"),
    pytest.param("UTC+3", id="offset"),
    pytest.param("+03:00", id="iso-offset"),
    pytest.param("Europe/Nowhere", id="unknown-zone"),
    pytest.param("europe/london", id="lower-case"),
    pytest.param("Europe/London ", id="trailing-space"),
    pytest.param("", id="empty"),
    # PostgreSQL reads these as POSIX rules ("std offset"), not as zone files.
    pytest.param("Mars/Olympus+3", id="posix-rule-shaped-like-a-zone-name"),
    pytest.param("Europe/London-1", id="zone-name-with-posix-offset"),
]
TIMEZONE_COLUMNS = {"profiles": "profiles_timezone_check", "recurring_bookings": "recurring_bookings_timezone_check"}


def set_timezone(table: str, zone: str, valid_rows, specialist) -> tuple:
    if table == "profiles":
        return ("update public.profiles set timezone = %s where id = %s", [zone, specialist.id])
    return insert_statement("recurring_bookings", valid_rows["recurring_bookings"] | {"timezone": zone})


@pytest.mark.parametrize("table", TIMEZONE_COLUMNS)
@pytest.mark.parametrize("zone", NOT_IANA_NAMES)
def test_timezone_must_be_an_iana_name(db, valid_rows, specialist_s, table, zone):
    error = refused(db, *set_timezone(table, zone, valid_rows, specialist_s))

    constraint = TIMEZONE_COLUMNS[table]
    assert isinstance(error, psycopg.errors.CheckViolation), f"{zone!r} is not an IANA zone name"
    assert error.diag.constraint_name == constraint
    assert error.diag.message_primary == f'new row for relation "{table}" violates check constraint "{constraint}"'


@pytest.mark.parametrize("zone", ["Europe/Nowhere", "Europe/London-1", ""])
def test_a_recurrence_cannot_be_moved_to_a_zone_that_is_not_iana(db, valid_rows, zone):
    """The recurring_bookings check is a trigger on insert and on updates that write the timezone."""
    row = insert_row(db, "recurring_bookings", valid_rows["recurring_bookings"] | {"timezone": "Europe/London"})

    error = refused(db, "update public.recurring_bookings set timezone = %s where id = %s", [zone, row["id"]])

    assert isinstance(error, psycopg.errors.CheckViolation)
    assert error.diag.constraint_name == "recurring_bookings_timezone_check"
    assert error.diag.table_name == "recurring_bookings"
    assert error.diag.message_primary == (
        'new row for relation "recurring_bookings" violates check constraint "recurring_bookings_timezone_check"')
    stored = db.execute("select timezone from public.recurring_bookings where id = %s", [row["id"]]).fetchone()
    assert stored["timezone"] == "Europe/London"


def test_a_recurrence_without_a_timezone_takes_the_specialists_and_it_is_checked(db, valid_rows, specialist_s):
    """recurring_bookings_defaults fills the zone before the timezone check reads it."""
    db.execute("update public.profiles set timezone = 'Asia/Tokyo' where id = %s", [specialist_s.id])
    row = insert_row(db, "recurring_bookings", valid_rows["recurring_bookings"] | {"timezone": None})

    assert row["timezone"] == "Asia/Tokyo"


@pytest.mark.parametrize("table", TIMEZONE_COLUMNS)
@pytest.mark.parametrize("zone", IANA_NAMES)
def test_iana_timezone_names_are_accepted(db, valid_rows, specialist_s, table, zone):
    statement, params = set_timezone(table, zone, valid_rows, specialist_s)
    db.execute(statement, params)

    stored = db.execute(
        sql.SQL("select timezone from {} where specialist_id = %s").format(sql.Identifier("public", table))
        if table == "recurring_bookings" else "select timezone from public.profiles where id = %s",
        [specialist_s.id],
    ).fetchone()["timezone"]
    assert stored == zone, f"{zone} is an IANA name and must be stored as given"


def test_profile_role_must_be_client_specialist_or_admin(db, client_a):
    error = refused(db, "update public.profiles set role = 'superadmin' where id = %s", [client_a.id])

    assert isinstance(error, psycopg.errors.CheckViolation)
    assert error.diag.constraint_name == "profiles_role_check"


# -- no overlapping confirmed sessions ----------------------------------------------

# The first session is [T0, T0+50min); each shape overlaps it.
OVERLAPS = {
    "same-slot": (T0, 50),
    "starts-during": (T0 + timedelta(minutes=30), 50),
    "ends-during": (T0 - timedelta(minutes=30), 50),
    "inside": (T0 + timedelta(minutes=10), 10),
    "around": (T0 - timedelta(hours=1), 180),
    "one-minute-overlap": (T0 + timedelta(minutes=49), 50),
}


@pytest.mark.parametrize("starts_at, minutes", OVERLAPS.values(), ids=OVERLAPS.keys())
def test_overlapping_confirmed_sessions_for_one_specialist_are_refused(
        db, specialist_s, client_a, client_b, starts_at, minutes):
    insert_row(db, "sessions", session_values(specialist_s, client_a))

    error = refused(db, *insert_statement("sessions", session_values(specialist_s, client_b, starts_at, minutes)))

    assert isinstance(error, psycopg.errors.ExclusionViolation), "a specialist cannot be in two sessions at once"
    assert error.diag.constraint_name == "sessions_no_specialist_overlap"
    assert error.diag.message_primary == \
        'conflicting key value violates exclusion constraint "sessions_no_specialist_overlap"'


@pytest.mark.parametrize("starts_at, minutes", OVERLAPS.values(), ids=OVERLAPS.keys())
def test_overlapping_confirmed_sessions_for_one_client_are_refused(
        db, specialist_s, specialist_t, client_a, starts_at, minutes):
    insert_row(db, "sessions", session_values(specialist_s, client_a))

    error = refused(db, *insert_statement("sessions", session_values(specialist_t, client_a, starts_at, minutes)))

    assert isinstance(error, psycopg.errors.ExclusionViolation), "a client cannot be in two sessions at once"
    assert error.diag.constraint_name == "sessions_no_client_overlap"
    assert error.diag.message_primary == \
        'conflicting key value violates exclusion constraint "sessions_no_client_overlap"'


def test_back_to_back_sessions_are_allowed(db, specialist_s, client_a):
    ten, eleven = T0, T0 + timedelta(hours=1)
    insert_row(db, "sessions", session_values(specialist_s, client_a, ten, 60))
    insert_row(db, "sessions", session_values(specialist_s, client_a, eleven, 60))
    insert_row(db, "sessions", session_values(specialist_s, client_a, ten - timedelta(hours=1), 60))

    count = db.execute("select count(*) as n from public.sessions where specialist_id = %s",
                       [specialist_s.id]).fetchone()["n"]
    assert count == 3, "[09:00,10:00), [10:00,11:00) and [11:00,12:00) do not overlap"


def test_sessions_of_different_specialists_and_clients_may_overlap(db, specialist_s, specialist_t, client_a, client_b):
    insert_row(db, "sessions", session_values(specialist_s, client_a))
    second = insert_row(db, "sessions", session_values(specialist_t, client_b))

    assert second["status"] == "confirmed", "two unrelated sessions at the same time are both stored"


def test_a_cancelled_session_does_not_block_its_slot(db, specialist_s, client_a):
    first = insert_row(db, "sessions", session_values(specialist_s, client_a))
    cancel(db, first["id"], client_a.id)

    again = insert_row(db, "sessions", session_values(specialist_s, client_a))

    assert again["status"] == "confirmed", "the slot of a cancelled session can be booked again by both parties"


def test_moving_a_session_onto_another_is_refused(db, specialist_s, client_a, client_b):
    insert_row(db, "sessions", session_values(specialist_s, client_a))
    later = insert_row(db, "sessions", session_values(specialist_s, client_b, T0 + timedelta(hours=3)))

    error = refused(db, "update public.sessions set starts_at = %s, ends_at = %s where id = %s",
                    [T0 + timedelta(minutes=20), T0 + timedelta(minutes=70), later["id"]])

    assert isinstance(error, psycopg.errors.ExclusionViolation), "an update cannot create an overlap either"
    assert error.diag.constraint_name == "sessions_no_specialist_overlap"


# -- one cancellation per session, one session per occurrence ----------------------

def test_the_database_keeps_one_cancellation_per_session_even_without_triggers(db, specialist_s, client_a):
    session = insert_row(db, "sessions", session_values(specialist_s, client_a))
    row = {"booking_id": session["id"], "cancelled_by": client_a.id}

    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        with db.transaction():
            # Replica mode switches the triggers off: what is left is the unique key.
            db.execute("set local session_replication_role = replica")
            insert_row(db, "booking_cancellations", row)
            insert_row(db, "booking_cancellations", row)

    assert caught.value.diag.constraint_name == "booking_cancellations_booking_id_key"
    assert caught.value.diag.message_primary == \
        'duplicate key value violates unique constraint "booking_cancellations_booking_id_key"'


@pytest.fixture
def recurrence(db, valid_rows) -> dict:
    return insert_row(db, "recurring_bookings", valid_rows["recurring_bookings"])


def test_one_session_per_recurrence_and_occurrence_date(db, specialist_s, client_a, recurrence):
    occurrence = {"recurring_booking_id": recurrence["id"], "occurrence_date": date(2031, 3, 3)}
    insert_row(db, "sessions", session_values(specialist_s, client_a, **occurrence))

    error = refused(db, *insert_statement(
        "sessions", session_values(specialist_s, client_a, T0 + timedelta(hours=4), **occurrence)))

    assert isinstance(error, psycopg.errors.UniqueViolation), "an occurrence is turned into one session only"
    assert error.diag.constraint_name == "sessions_recurring_occurrence_key"
    assert error.diag.message_primary == \
        'duplicate key value violates unique constraint "sessions_recurring_occurrence_key"'


def test_a_recurrence_gets_one_session_per_date(db, specialist_s, client_a, recurrence):
    for week in range(3):
        insert_row(db, "sessions", session_values(
            specialist_s, client_a, T0 + timedelta(weeks=week),
            recurring_booking_id=recurrence["id"], occurrence_date=date(2031, 3, 3) + timedelta(weeks=week)))

    count = db.execute("select count(*) as n from public.sessions where recurring_booking_id = %s",
                       [recurrence["id"]]).fetchone()["n"]
    assert count == 3, "different occurrence dates of one recurrence are different sessions"


def test_a_session_made_from_a_recurrence_names_its_occurrence_date(db, specialist_s, client_a, recurrence):
    error = refused(db, *insert_statement(
        "sessions", session_values(specialist_s, client_a, recurring_booking_id=recurrence["id"])))

    assert isinstance(error, psycopg.errors.CheckViolation), "a recurrence's session without its date is refused"
    assert error.diag.constraint_name == "sessions_occurrence_check"
    assert error.diag.message_primary == \
        'new row for relation "sessions" violates check constraint "sessions_occurrence_check"'


# -- a specialist's rates never overlap ---------------------------------------------

# The first rate runs [2030-01-01, 2030-07-01).
RATE_OVERLAPS = {
    "same-period": (RATE_FROM, RATE_TO),
    "starts-inside-open-ended": (datetime(2030, 3, 1, tzinfo=UTC), None),
    "open-ended-from-before": (datetime(2029, 6, 1, tzinfo=UTC), None),
    "ends-inside": (datetime(2029, 6, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)),
    "inside": (datetime(2030, 2, 1, tzinfo=UTC), datetime(2030, 3, 1, tzinfo=UTC)),
}


def rate(specialist, effective_from, effective_to, amount=80) -> dict:
    return {"specialist_id": specialist.id, "amount": amount, "duration_minutes": 50,
            "effective_from": effective_from, "effective_to": effective_to}


@pytest.mark.parametrize("effective_from, effective_to", RATE_OVERLAPS.values(), ids=RATE_OVERLAPS.keys())
def test_a_specialists_rates_never_overlap(db, specialist_s, effective_from, effective_to):
    insert_row(db, "specialist_rates", rate(specialist_s, RATE_FROM, RATE_TO))

    error = refused(db, *insert_statement("specialist_rates", rate(specialist_s, effective_from, effective_to, 95)))

    assert isinstance(error, psycopg.errors.ExclusionViolation), "two rates in effect at once are refused"
    assert error.diag.constraint_name == "specialist_rates_no_overlap"
    assert error.diag.message_primary == \
        'conflicting key value violates exclusion constraint "specialist_rates_no_overlap"'


def test_rates_that_follow_each_other_and_rates_of_other_specialists_are_accepted(db, specialist_s, specialist_t):
    insert_row(db, "specialist_rates", rate(specialist_s, RATE_FROM, RATE_TO))
    insert_row(db, "specialist_rates", rate(specialist_s, RATE_TO, None, 95))
    insert_row(db, "specialist_rates", rate(specialist_s, datetime(2029, 1, 1, tzinfo=UTC), RATE_FROM, 70))
    insert_row(db, "specialist_rates", rate(specialist_t, RATE_FROM, None))

    count = db.execute("select count(*) as n from public.specialist_rates where specialist_id in (%s, %s)",
                       [specialist_s.id, specialist_t.id]).fetchone()["n"]
    assert count == 4, "adjacent periods and another specialist's rates do not overlap"


def test_a_session_cannot_be_created_already_cancelled(db, valid_rows):
    error = refused(db, *insert_statement("sessions", valid_rows["sessions"] | {
        "status": "cancelled", "cancelled_at": "2030-01-01T00:00:00+00"}))

    assert isinstance(error, psycopg.errors.CheckViolation), "a cancelled session must come from a cancellation"
    assert error.diag.message_primary == (
        "Sessions are created confirmed; cancel them through booking_cancellations.")
