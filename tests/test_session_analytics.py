"""Session analytics (sql/0061_session_analytics.sql): one row per specialist and
calendar month in the specialist's timezone, called the way PostgREST calls an RPC.

The fixture practice: specialist S works in Europe/Berlin, which leaves summer time
on Sunday 26 October 2025 (03:00 CEST becomes 02:00 CET), and has sessions on both
sides of that night and on both sides of midnight between October and November
(local), where UTC and Berlin disagree about the month. Every expected number below
is worked out by hand from the rows written here, in the comments beside it.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from tests.rls_fixtures import attempt
from tests.support import ANON, acting_as, create_person

UTC = timezone.utc


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


COLUMNS = ("specialist_id, month, sessions, attended, no_shows, unrecorded, cancelled, cancelled_by_client,"
           " cancelled_late, cancelled_by_specialist, cancelled_by_practice, cancellation_rate, booked_minutes,"
           " available_minutes, utilization, booked_value, currency, recurring_share, new_clients")


def analytics(db, person, from_date, to_date, after=None) -> list[dict]:
    with acting_as(db, person):
        return db.execute(f"select {COLUMNS} from public.session_analytics(%s, %s, %s)",
                          [from_date, to_date, after]).fetchall()


class Practice:
    def __init__(self, db):
        self.db = db
        self.s = create_person(db, "specialist", full_name="Sabine Berlin", timezone="Europe/Berlin")
        self.t = create_person(db, "specialist", full_name="Tom Utc", timezone="UTC")
        self.a, self.b, self.c, self.d = (create_person(db, "client") for _ in range(4))
        self.admin = create_person(db, "admin")

    def session(self, specialist, client, starts: datetime, minutes: int = 50, *, price="90.00", currency="EUR",
                attendance=None, recurring=False):
        ends = starts + timedelta(minutes=minutes)
        return self.db.execute(
            "insert into public.sessions (specialist_id, client_id, starts_at, ends_at, price, currency, attendance,"
            " attendance_recorded_at, attendance_recorded_by, occurrence_date)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
            [specialist.id, client.id, starts, ends, Decimal(price), currency, attendance,
             ends + timedelta(hours=1) if attendance else None, specialist.id if attendance else None,
             starts.date() if recurring else None]).fetchone()["id"]

    def cancelled(self, specialist, client, starts: datetime, *, party: str, late: bool, by=None):
        """A past cancellation, written as the cancellation path left it (a session that has
        started can no longer be cancelled today; tests/test_attendance.py covers the path)."""
        by = by or {"client": client, "link": client, "specialist": specialist}.get(party, self.admin)
        with self.db.transaction():
            self.db.execute("set local session_replication_role = replica")
            session = self.db.execute(
                "insert into public.sessions (specialist_id, client_id, starts_at, ends_at, blocked_until, price,"
                " currency, status, cancelled_at, cancelled_by) values (%s, %s, %s, %s, %s, 90, 'EUR', 'cancelled',"
                " %s, %s) returning id",
                [specialist.id, client.id, starts, starts + timedelta(minutes=50), starts + timedelta(minutes=50),
                 starts - timedelta(hours=10 if late else 72), by.id]).fetchone()["id"]
            self.db.execute(
                "insert into public.booking_cancellations (booking_id, cancelled_by, cancelled_by_party, late,"
                " created_at) values (%s, %s, %s, %s, %s)",
                [session, by.id, party, late, starts - timedelta(hours=10 if late else 72)])
            self.db.execute("set local session_replication_role = origin")  # outlives the savepoint otherwise


@pytest.fixture
def practice(db) -> Practice:
    p = Practice(db)
    s, a, b, c, d = p.s, p.a, p.b, p.c, p.d
    # Weekly hours: Sunday 00:00-04:00 and Monday 09:00-17:00, Berlin time.
    for dow, start, end in ((0, time(0), time(4)), (1, time(9), time(17))):
        db.execute("insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)"
                   " values (%s, %s, %s, %s)", [s.id, dow, start, end])
    for day, available, start, end in (
        (date(2025, 10, 13), False, time(13), time(15)),  # two hours off that Monday
        (date(2025, 11, 10), False, None, None),          # the whole Monday off
        (date(2025, 11, 17), True, time(10), time(12)),   # that Monday only 10:00-12:00
    ):
        db.execute("insert into public.specialist_availability_exceptions (specialist_id, exception_date,"
                   " is_available, all_day, start_time, end_time) values (%s, %s, %s, %s, %s, %s)",
                   [s.id, day, available, start is None, start, end])

    # Before the range: A's first session with S, 30 September 23:30 CEST (21:30 UTC).
    p.session(s, a, utc(2025, 9, 30, 21, 30), attendance="attended")
    # October (Berlin):
    p.session(s, a, utc(2025, 10, 6, 7, 0), attendance="attended", recurring=True)    # Mon 09:00 CEST
    p.session(s, a, utc(2025, 10, 13, 7, 0), attendance="no_show", recurring=True)    # Mon 09:00 CEST
    p.session(s, b, utc(2025, 10, 25, 23, 0), attendance="attended")                  # Sun 26th 01:00 CEST
    p.session(s, b, utc(2025, 10, 26, 0, 30), 60, price="120.00")                     # 02:30 CEST-02:30 CET
    p.session(s, c, utc(2025, 10, 31, 22, 30), attendance="attended")                 # Fri 31st 23:30 CET
    p.cancelled(s, a, utc(2025, 10, 20, 7, 0), party="client", late=True)
    p.cancelled(s, b, utc(2025, 10, 27, 8, 0), party="specialist", late=False)
    p.cancelled(s, c, utc(2025, 10, 27, 10, 0), party="client", late=False)
    # November (Berlin), though the first is still 31 October in UTC:
    p.session(s, c, utc(2025, 10, 31, 23, 30), attendance="no_show")                  # Sat 1st 00:30 CET
    p.session(s, d, utc(2025, 11, 3, 8, 0), attendance="attended")                    # Mon 09:00 CET
    p.session(s, d, utc(2025, 11, 24, 8, 0))                                          # Mon 09:00 CET
    p.cancelled(s, a, utc(2025, 11, 17, 9, 0), party="admin", late=False)
    p.cancelled(s, d, utc(2025, 11, 24, 10, 0), party="link", late=True)
    # After the range: 1 December 00:15 CET, still 30 November in UTC.
    p.session(s, a, utc(2025, 11, 30, 23, 15))
    # T (UTC, no hours) has one October session.
    p.session(p.t, a, utc(2025, 10, 8, 12, 0), attendance="attended")
    return p


def expected_s(p: Practice) -> list[dict]:
    # Hours, October: Mondays 6, 13, 20, 27 = 480 + (480 - 120) + 480 + 480 = 1,800 minutes;
    # Sundays 5, 12, 19 = 3 × 240, and 26 (the clocks go back: 00:00 CEST to 04:00 CET) = 300: 1,020.
    # November: Mondays 3, 24 = 2 × 480, 10 = 0, 17 = 120: 1,080; Sundays 2, 9, 16, 23, 30 = 5 × 240 = 1,200.
    october_hours, november_hours = 1800 + 1020, 1080 + 1200
    return [
        {"specialist_id": p.s.id, "month": date(2025, 10, 1),
         "sessions": 5, "attended": 3, "no_shows": 1, "unrecorded": 1,
         "cancelled": 3, "cancelled_by_client": 2, "cancelled_late": 1, "cancelled_by_specialist": 1,
         "cancelled_by_practice": 0,
         "cancellation_rate": Decimal("0.3750"),              # 3 of 8
         "booked_minutes": 260,                                # 4 × 50 + 60 (the night the clocks go back)
         "available_minutes": october_hours,
         "utilization": Decimal("0.0922"),                     # 260 / 2,820 = 0.09219…
         "booked_value": Decimal("480.00"), "currency": "EUR",  # 4 × 90 + 120
         "recurring_share": Decimal("0.4000"),                 # 2 of 5
         "new_clients": 2},                                    # B and C; A began in September
        {"specialist_id": p.s.id, "month": date(2025, 11, 1),
         "sessions": 3, "attended": 1, "no_shows": 1, "unrecorded": 1,
         "cancelled": 2, "cancelled_by_client": 1, "cancelled_late": 1, "cancelled_by_specialist": 0,
         "cancelled_by_practice": 1,
         "cancellation_rate": Decimal("0.4000"),              # 2 of 5
         "booked_minutes": 150,
         "available_minutes": november_hours,
         "utilization": Decimal("0.0658"),                     # 150 / 2,280 = 0.06578…
         "booked_value": Decimal("270.00"), "currency": "EUR",
         "recurring_share": Decimal("0.0000"),
         "new_clients": 1},                                    # D; C began in October
    ]


def expected_t(p: Practice) -> list[dict]:
    empty = {"sessions": 0, "attended": 0, "no_shows": 0, "unrecorded": 0, "cancelled": 0,
             "cancelled_by_client": 0, "cancelled_late": 0, "cancelled_by_specialist": 0,
             "cancelled_by_practice": 0, "cancellation_rate": None, "booked_minutes": 0, "available_minutes": 0,
             "utilization": None, "booked_value": Decimal("0"), "currency": None, "recurring_share": None,
             "new_clients": 0}
    return [
        {**empty, "specialist_id": p.t.id, "month": date(2025, 10, 1), "sessions": 1, "attended": 1,
         "booked_minutes": 50, "booked_value": Decimal("90.00"), "currency": "EUR",
         "cancellation_rate": Decimal("0.0000"), "recurring_share": Decimal("0.0000"), "new_clients": 1},
        {**empty, "specialist_id": p.t.id, "month": date(2025, 11, 1)},
    ]


def test_a_specialist_sees_their_own_months_across_dst_and_the_month_boundary(db, practice):
    assert analytics(db, practice.s, date(2025, 10, 1), date(2025, 11, 30)) == expected_s(practice)


def test_an_admin_sees_every_specialist(db, practice):
    rows = analytics(db, practice.admin, date(2025, 10, 1), date(2025, 11, 30))
    assert rows == sorted(expected_s(practice) + expected_t(practice), key=lambda r: (r["specialist_id"], r["month"]))


@pytest.mark.parametrize("who", ["a", "b"])
def test_a_client_sees_nothing(db, practice, who):
    assert analytics(db, getattr(practice, who), date(2025, 10, 1), date(2025, 11, 30)) == []


def test_anon_cannot_call_it(db, practice):
    result = attempt(db, ANON, "select * from public.session_analytics('2025-10-01', '2025-11-30')")
    assert result.sqlstate == "42501"
    assert result.message == "permission denied for function session_analytics"


def test_part_of_a_month_counts_only_its_part(db, practice):
    # 20 October to 2 November: October's Mondays 20 and 27 (960) and Sunday 26 (300);
    # November's Sunday 2 (240). Sessions: 25/26 October (two), 31 October, and 1 November.
    rows = analytics(db, practice.s, date(2025, 10, 20), date(2025, 11, 2))
    assert [(r["month"], r["sessions"], r["available_minutes"], r["cancelled"]) for r in rows] == [
        (date(2025, 10, 1), 3, 1260, 3),  # + the three cancellations of 20 and 27 October
        (date(2025, 11, 1), 1, 240, 0),
    ]


def test_upcoming_sessions_are_not_unrecorded(db, practice):
    today = datetime.now(UTC).date()
    practice.session(practice.s, practice.b, datetime.now(UTC) + timedelta(days=1))
    rows = analytics(db, practice.s, today - timedelta(days=1), today + timedelta(days=3))
    assert sum(r["sessions"] for r in rows) == 1
    assert sum(r["unrecorded"] for r in rows) == 0


def test_several_currencies_are_never_summed(db, practice):
    practice.session(practice.s, practice.c, utc(2025, 11, 10, 15, 0), price="100.00", currency="USD")
    november = analytics(db, practice.s, date(2025, 11, 1), date(2025, 11, 30))[0]
    assert (november["sessions"], november["booked_value"], november["currency"]) == (4, None, None)


def test_admin_pages_stay_under_postgrests_1000_rows(db, practice):
    extra = {create_person(db, "specialist").id for _ in range(41)}
    everyone = extra | {practice.s.id, practice.t.id}  # 43 specialists × 24 months = 1,032 rows
    first = analytics(db, practice.admin, date(2024, 1, 1), date(2025, 12, 31))
    assert len(first) == 41 * 24, "floor(1,000 / 24) = 41 whole specialists"
    second = analytics(db, practice.admin, date(2024, 1, 1), date(2025, 12, 31), first[-1]["specialist_id"])
    assert len(second) == 2 * 24
    third = analytics(db, practice.admin, date(2024, 1, 1), date(2025, 12, 31), second[-1]["specialist_id"])
    assert third == []
    seen = [(r["specialist_id"], r["month"]) for r in first + second]
    assert len(set(seen)) == len(seen) == 43 * 24
    assert {r["specialist_id"] for r in first + second} == everyone
    # S's own rows are the same wherever they fall.
    assert [r for r in first + second if r["specialist_id"] == practice.s.id
            and r["month"] in (date(2025, 10, 1), date(2025, 11, 1))] == expected_s(practice)


@pytest.mark.parametrize(("from_date", "to_date", "message"), [
    (date(2025, 11, 1), date(2025, 10, 1), "to_date (2025-10-01) is before from_date (2025-11-01)."),
    (date(2024, 1, 1), date(2026, 1, 1),
     "At most 24 months of analytics can be asked for at once; 2024-01-01 to 2026-01-01 is 25 months."),
    (None, date(2026, 1, 1), "from_date and to_date are required."),
])
def test_bad_ranges_are_refused_with_a_sentence(db, practice, from_date, to_date, message):
    result = attempt(db, practice.s, "select * from public.session_analytics(%s, %s)", [from_date, to_date])
    assert (result.sqlstate, result.message) == ("22023", message)


def test_available_minutes_agree_with_the_booking_rules_hours(db, practice):
    """The set-based hours of the analytics are private.specialist_hours' (sql/0019), day by day:
    overlapping windows, an inactive one, exceptions on both DST nights, in three timezones."""
    s = practice.s
    u = create_person(db, "specialist", timezone="America/New_York")
    for who, dow, start, end, active in ((s, 1, time(16), time(19), True),   # overlaps Monday 09:00-17:00
                                         (s, 2, time(8), time(9), False),
                                         (u, 0, time(1), time(3), True),      # 2 November 2025: 01:00-02:00 twice
                                         (u, 0, time(2), time(4), True),
                                         (u, 6, time(22), time(23, 59), True)):
        db.execute("insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time,"
                   " is_active) values (%s, %s, %s, %s, %s)", [who.id, dow, start, end, active])
    for who, day, available, start, end in ((u, date(2025, 3, 9), False, time(2), time(3)),
                                            (u, date(2025, 11, 2), True, time(0), time(6)),
                                            (s, date(2025, 3, 30), True, None, None),
                                            (s, date(2025, 10, 26), False, time(2), time(3))):
        db.execute("insert into public.specialist_availability_exceptions (specialist_id, exception_date,"
                   " is_available, all_day, start_time, end_time) values (%s, %s, %s, %s, %s, %s)",
                   [who.id, day, available, start is None, start, end])
    rows = analytics(db, practice.admin, date(2025, 1, 1), date(2025, 12, 31))
    by_rules = {(r["id"], r["month"]): r["minutes"] for r in db.execute(
        """
        select p.id, m::date as month,
               (select coalesce(sum(extract(epoch from upper(h) - lower(h))), 0) / 60
                from unnest(private.specialist_hours(p.id, p.timezone, m::date,
                                                     (m + interval '1 month')::date - 1, 'all')) h)::integer as minutes
        from public.profiles p
        cross join generate_series('2025-01-01'::timestamp, '2025-12-01', interval '1 month') m
        where p.role = 'specialist'
        """)}
    assert len(rows) == len(by_rules) == 3 * 12
    assert {(r["specialist_id"], r["month"]): r["available_minutes"] for r in rows} == by_rules
    # October: + 17:00-19:00 on four Mondays (the overlap counts once), - 02:00-03:00 on the 26th,
    # an hour that happens twice that night (02:00 CEST to 03:00 CET): 120 real minutes.
    assert by_rules[(s.id, date(2025, 10, 1))] == 2820 + 4 * 120 - 120
