"""The recurring-booking dispatcher: which sessions it creates and when, what it
reports, and how it behaves when things go wrong or run twice.

The recurrence table drives ``private.dispatch_recurring_bookings`` day by day at
02:00 UTC (the daily job's time) with fixed ``run_at`` values, inside a rolled-back
transaction. Every case lists the sessions it must produce (local wall-clock time and
the UTC instant); the list is first checked against an oracle written independently
with dateutil (rrule, relativedelta) and zoneinfo, then against the database.

The rest goes through ``shared.dispatcher.dispatch`` (what the HTTP function runs) on
committed data: the answer's shape, the audit entry, unbookable occurrences, running
twice and at once, dry runs and calendar events.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from dateutil.relativedelta import relativedelta
from dateutil.rrule import WEEKLY, rrule

from shared import calendar_sync, dispatcher
from tests.dispatcher_support import (
    LONG_AGO, add_recurrence, book, dispatch_sql, recurrence, run_at, sessions_of, specialist_with_rate,
)
from tests.support import create_person

UTC = timezone.utc


def days(first: str, last: str, *, skip: tuple[str, str] | None = None) -> tuple[date, ...]:
    """Every day from first to last; `skip` leaves out an inclusive range (an outage)."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    gap = tuple(map(date.fromisoformat, skip)) if skip else None
    return tuple(start + timedelta(n) for n in range((end - start).days + 1)
                 if not (gap and gap[0] <= start + timedelta(n) <= gap[1]))


@dataclass(frozen=True)
class Case:
    id: str
    frequency: str
    start: str  # start_date
    at: str  # start_time, local to `zone`
    zone: str
    runs: tuple[date, ...]  # the days the 02:00 UTC job ran
    # Each session: its local wall-clock start ("YYYY-MM-DD HH:MM" in `zone`) and its UTC time of day.
    created: tuple[tuple[str, str], ...]
    next_date: str  # next_booking_date after the last run
    missed: tuple[str, ...] = ()  # occurrence dates reported as missed
    active_after: bool = True
    horizon: int = 7
    end: str | None = None
    active: bool = True
    created_on: str | None = None  # the recurrence's creation day (default: long ago)


CASES = [
    Case("weekly-london-across-march-dst", "weekly", "2026-03-15", "10:00", "Europe/London",
         days("2026-03-10", "2026-03-31"),
         created=(("2026-03-15 10:00", "10:00"), ("2026-03-22 10:00", "10:00"),
                  ("2026-03-29 10:00", "09:00"), ("2026-04-05 10:00", "09:00")),
         next_date="2026-04-12"),
    Case("weekly-london-across-october-dst", "weekly", "2026-10-18", "18:30", "Europe/London",
         days("2026-10-15", "2026-10-28"),
         created=(("2026-10-18 18:30", "17:30"), ("2026-10-25 18:30", "18:30"), ("2026-11-01 18:30", "18:30")),
         next_date="2026-11-08"),
    Case("weekly-new-york-across-march-dst", "weekly", "2026-03-01", "09:00", "America/New_York",
         days("2026-02-25", "2026-03-12"),
         created=(("2026-03-01 09:00", "14:00"), ("2026-03-08 09:00", "13:00"), ("2026-03-15 09:00", "13:00")),
         next_date="2026-03-22"),
    Case("weekly-new-york-across-november-dst", "weekly", "2026-10-25", "09:00", "America/New_York",
         days("2026-10-20", "2026-11-05"),
         created=(("2026-10-25 09:00", "13:00"), ("2026-11-01 09:00", "14:00"), ("2026-11-08 09:00", "14:00")),
         next_date="2026-11-15"),
    # 01:30 does not exist on 29 March in London: the clocks go from 01:00 to 02:00, so it is 02:30 BST.
    Case("weekly-london-time-inside-the-spring-gap", "weekly", "2026-03-22", "01:30", "Europe/London",
         days("2026-03-20", "2026-03-30"),
         created=(("2026-03-22 01:30", "01:30"), ("2026-03-29 02:30", "01:30"), ("2026-04-05 01:30", "00:30")),
         next_date="2026-04-12"),
    # 01:30 happens twice on 25 October in London: the first one (BST), as RFC 5545 and calendars read it.
    Case("weekly-london-time-repeated-in-the-autumn", "weekly", "2026-10-18", "01:30", "Europe/London",
         days("2026-10-15", "2026-10-26"),
         created=(("2026-10-18 01:30", "00:30"), ("2026-10-25 01:30", "00:30"), ("2026-11-01 01:30", "01:30")),
         next_date="2026-11-08"),
    Case("monthly-from-the-31st-clamped-to-month-ends", "monthly", "2027-01-31", "17:00", "America/New_York",
         days("2027-01-25", "2027-05-31"),
         created=(("2027-01-31 17:00", "22:00"), ("2027-02-28 17:00", "22:00"), ("2027-03-31 17:00", "21:00"),
                  ("2027-04-30 17:00", "21:00"), ("2027-05-31 17:00", "21:00")),
         next_date="2027-06-30"),
    Case("monthly-from-the-31st-ending-between-occurrences", "monthly", "2027-01-31", "17:00", "America/New_York",
         days("2027-01-25", "2027-04-30"), end="2027-04-15",
         created=(("2027-01-31 17:00", "22:00"), ("2027-02-28 17:00", "22:00"), ("2027-03-31 17:00", "21:00")),
         next_date="2027-04-30", active_after=False),
    Case("monthly-from-february-29th-over-a-year", "monthly", "2028-02-29", "08:00", "Europe/London",
         (date(2028, 2, 27),), horizon=400,
         created=(("2028-02-29 08:00", "08:00"), ("2028-03-29 08:00", "07:00"), ("2028-04-29 08:00", "07:00"),
                  ("2028-05-29 08:00", "07:00"), ("2028-06-29 08:00", "07:00"), ("2028-07-29 08:00", "07:00"),
                  ("2028-08-29 08:00", "07:00"), ("2028-09-29 08:00", "07:00"), ("2028-10-29 08:00", "08:00"),
                  ("2028-11-29 08:00", "08:00"), ("2028-12-29 08:00", "08:00"), ("2029-01-29 08:00", "08:00"),
                  ("2029-02-28 08:00", "08:00"), ("2029-03-29 08:00", "07:00")),
         next_date="2029-04-29"),
    Case("biweekly-across-october-dst", "biweekly", "2026-09-07", "08:15", "Europe/London",
         days("2026-09-01", "2026-11-04"),
         created=(("2026-09-07 08:15", "07:15"), ("2026-09-21 08:15", "07:15"), ("2026-10-05 08:15", "07:15"),
                  ("2026-10-19 08:15", "07:15"), ("2026-11-02 08:15", "08:15")),
         next_date="2026-11-16"),
    Case("end-date-on-an-occurrence-is-included-then-deactivated", "weekly", "2026-06-01", "12:00", "Europe/London",
         days("2026-05-28", "2026-06-30"), end="2026-06-22",
         created=(("2026-06-01 12:00", "11:00"), ("2026-06-08 12:00", "11:00"), ("2026-06-15 12:00", "11:00"),
                  ("2026-06-22 12:00", "11:00")),
         next_date="2026-06-29", active_after=False),
    Case("start-in-the-future-waits-for-the-horizon", "weekly", "2026-08-20", "10:00", "Europe/London",
         days("2026-08-01", "2026-08-13"),
         created=(("2026-08-20 10:00", "09:00"),),
         next_date="2026-08-27"),
    Case("outage-of-ten-days-reports-the-missed-one", "weekly", "2026-05-04", "10:00", "Europe/London",
         days("2026-04-30", "2026-05-21", skip=("2026-05-11", "2026-05-20")),
         created=(("2026-05-04 10:00", "09:00"), ("2026-05-11 10:00", "09:00"), ("2026-05-25 10:00", "09:00")),
         missed=("2026-05-18",), next_date="2026-06-01"),
    Case("earlier-the-same-day-than-the-run-is-missed", "weekly", "2026-04-06", "01:00", "UTC",
         (date(2026, 4, 6),),
         created=(("2026-04-13 01:00", "01:00"),), missed=("2026-04-06",), next_date="2026-04-20"),
    # Made on 20 May with a start date two weeks earlier: the days before it existed are not "missed".
    Case("occurrences-before-the-recurrence-existed-are-not-reported", "weekly", "2026-05-04", "10:00", "UTC",
         (date(2026, 5, 21),), created_on="2026-05-20",
         created=(("2026-05-25 10:00", "10:00"),), next_date="2026-06-01"),
    Case("inactive-recurrence-makes-nothing", "weekly", "2026-05-04", "10:00", "Europe/London",
         days("2026-05-01", "2026-05-10"), active=False,
         created=(), next_date="2026-05-04", active_after=False),
]


# -- the oracle: dateutil and zoneinfo, one occurrence at a time ------------------------------

@dataclass
class Expected:
    created: list[tuple[date, datetime]] = field(default_factory=list)  # (run day, UTC start)
    missed: list[tuple[date, date]] = field(default_factory=list)  # (run day, occurrence date)
    next_date: date | None = None
    active: bool = True
    last_generated: date | None = None


def occurrence_dates(case: Case, first: date, last: date) -> list[date]:
    start = date.fromisoformat(case.start)
    if case.frequency == "monthly":
        found, k = [], 0
        while (day := start + relativedelta(months=k)) <= last:
            if day >= first:
                found.append(day)
            k += 1
        return found
    rule = rrule(WEEKLY, interval={"weekly": 1, "biweekly": 2}[case.frequency],
                 dtstart=datetime.combine(start, time()), until=datetime.combine(last, time()))
    return [moment.date() for moment in rule if moment.date() >= first]


def local_start(case: Case, day: date) -> datetime:
    """The UTC instant of the case's wall-clock time on `day` (zoneinfo: fold=0 for repeated times,
    the offset before the change for times inside a gap)."""
    return datetime.combine(day, time.fromisoformat(case.at), ZoneInfo(case.zone)).astimezone(UTC)


def oracle(case: Case) -> Expected:
    """Simulates the daily runs: each run books every occurrence from the next date up to its
    horizon (or the end date); one already past is reported missed."""
    result = Expected(active=case.active)
    next_date = date.fromisoformat(case.start)
    end = date.fromisoformat(case.end) if case.end else None
    existed_from = date.fromisoformat(case.created_on) if case.created_on else date.min
    for day in case.runs:
        horizon = day + timedelta(days=case.horizon)
        if not result.active or next_date > horizon:
            continue
        last = min(horizon, end) if end else horizon
        for occurrence in occurrence_dates(case, max(next_date, existed_from), last):
            starts_at = local_start(case, occurrence)
            if starts_at <= run_at(day):
                result.missed.append((day, occurrence))
            else:
                result.created.append((day, starts_at))
                result.last_generated = occurrence
        next_date = occurrence_dates(case, last + timedelta(days=1), last + timedelta(days=62))[0]
        result.active = end is None or next_date <= end
    result.next_date = next_date
    return result


def as_written(case: Case, instants: list[datetime]) -> list[tuple[str, str]]:
    zone = ZoneInfo(case.zone)
    return [(moment.astimezone(zone).strftime("%Y-%m-%d %H:%M"), moment.astimezone(UTC).strftime("%H:%M"))
            for moment in instants]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_case_table_agrees_with_the_dateutil_oracle(case: Case):
    expected = oracle(case)
    assert as_written(case, [starts for _run, starts in expected.created]) == list(case.created)
    assert [d.isoformat() for _run, d in expected.missed] == list(case.missed)
    assert (expected.next_date.isoformat(), expected.active) == (case.next_date, case.active_after)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_daily_runs_create_the_expected_sessions_at_local_time(db: psycopg.Connection, case: Case):
    # The booking rules' maximum advance must reach as far as the run's horizon.
    db.execute("update private.practice_settings set booking_max_advance_days = greatest(booking_max_advance_days, %s)",
               [case.horizon])
    specialist = specialist_with_rate(db, zone=case.zone)
    client = create_person(db, "client")
    created_at = datetime.combine(date.fromisoformat(case.created_on), time(12), UTC) if case.created_on else LONG_AGO
    recurring_id = add_recurrence(db, client, specialist, frequency=case.frequency, start_date=case.start,
                                  start_time=case.at, zone=case.zone, end_date=case.end, is_active=case.active,
                                  created_at=created_at)
    created, missed, other = [], [], []
    for day in case.runs:
        for row in dispatch_sql(db, run_at(day), case.horizon):
            assert row["recurring_id"] == recurring_id
            if row["outcome"] == "created":
                created.append((day, row["session_id"]))
            elif row["outcome"] == "missed":
                missed.append((day, row["occurrence_date"]))
            else:
                other.append(row)

    expected = oracle(case)
    sessions = {s["id"]: s for s in sessions_of(db, recurring_id)}
    assert set(sessions) == {session_id for _day, session_id in created}, "the sessions are the ones reported"
    assert [(day, sessions[sid]["starts_at"]) for day, sid in created] == expected.created, \
        "each occurrence at its local time, created by the first run whose horizon reaches it"
    assert as_written(case, [sessions[sid]["starts_at"] for _day, sid in created]) == list(case.created)
    assert all(sessions[sid]["starts_at"] > run_at(day) for day, sid in created), "never created in the past"
    assert all(s["ends_at"] - s["starts_at"] == timedelta(minutes=50) for s in sessions.values())
    assert all(s["occurrence_date"] == s["starts_at"].astimezone(ZoneInfo(case.zone)).date()
               for s in sessions.values())
    assert missed == expected.missed
    assert other == []
    state = recurrence(db, recurring_id)
    assert (state["next_booking_date"], state["is_active"], state["last_generated_date"]) == (
        expected.next_date, expected.active, expected.last_generated)


# -- through shared.dispatcher.dispatch, on committed data ----------------------------------

RUN_AT = run_at(date(2026, 6, 1))  # a Monday; the occurrences below are on Wednesday 3 June
OCCURRENCE = date(2026, 6, 3)
LONDON = ZoneInfo("Europe/London")


def at_ten(day: date = OCCURRENCE) -> datetime:
    return datetime.combine(day, time(10), LONDON)


@pytest.fixture
def dispatcher_env(functions_env):
    """The functions' settings, pointed at the test database, with calendar sync off."""
    functions_env.set(GOOGLE_SERVICE_ACCOUNT_JSON=None)
    return functions_env


def good_recurrences(conn: psycopg.Connection, count: int, *, start: date = OCCURRENCE) -> list[uuid.UUID]:
    """`count` bookable weekly recurrences at 10:00 London, each with its own specialist and client."""
    return [add_recurrence(conn, create_person(conn, "client"), specialist_with_rate(conn), start_date=start)
            for _ in range(count)]


def unbookable(conn: psycopg.Connection, kind: str) -> uuid.UUID:
    """A recurrence whose 3 June occurrence cannot be booked, for the reason `kind`."""
    client = create_person(conn, "client")
    specialist = specialist_with_rate(conn, rate=(kind != "no-rate"))
    if kind == "specialist-busy":
        book(conn, specialist, create_person(conn, "client"), at_ten() + timedelta(minutes=20))
    elif kind == "exception-day":
        conn.execute("""insert into public.specialist_availability_exceptions (specialist_id, exception_date, reason)
                        values (%s, %s, 'sick_leave')""", [specialist.id, OCCURRENCE])
    elif kind == "client-double-booked":
        book(conn, specialist_with_rate(conn), client, at_ten() - timedelta(minutes=30))
    return add_recurrence(conn, client, specialist, start_date=OCCURRENCE)


UNBOOKABLE = {
    "no-rate": "No rates found",
    "specialist-busy": "The specialist already has a session at that time",
    "exception-day": "The specialist is unavailable that day (availability exception)",
    "client-double-booked": "The client already has a session at that time",
}


@pytest.mark.parametrize(("kind", "reason"), UNBOOKABLE.items(), ids=list(UNBOOKABLE))
def test_unbookable_occurrence_is_reported_with_its_reason_and_the_others_are_created(
        dispatcher_env, committed_db, kind, reason):
    good = good_recurrences(committed_db, 3)
    bad = unbookable(committed_db, kind)

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    assert answer["errors"] == [{"recurring_id": str(bad), "occurrence_date": "2026-06-03", "error": reason}]
    assert answer["count"] == 3
    made = committed_db.execute(
        "select recurring_booking_id, starts_at from public.sessions where recurring_booking_id is not null"
    ).fetchall()
    assert {(r["recurring_booking_id"], r["starts_at"]) for r in made} == {(g, at_ten()) for g in good}
    for recurring_id in [*good, bad]:
        assert recurrence(committed_db, recurring_id)["next_booking_date"] == date(2026, 6, 10), \
            "every recurrence moves on to its next occurrence"


def test_every_kind_of_unbookable_occurrence_together_never_stops_the_good_ones(dispatcher_env, committed_db):
    good = good_recurrences(committed_db, 5)
    bad = {unbookable(committed_db, kind): reason for kind, reason in UNBOOKABLE.items()}

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    assert answer["success"] is True
    assert answer["count"] == 5
    assert {e["recurring_id"]: e["error"] for e in answer["errors"]} == {str(k): v for k, v in bad.items()}
    sessions = committed_db.execute(
        "select recurring_booking_id from public.sessions where recurring_booking_id is not null").fetchall()
    assert sorted(r["recurring_booking_id"] for r in sessions) == sorted(good)
    advanced = committed_db.execute(
        "select count(*) as n from public.recurring_bookings where next_booking_date = '2026-06-10'").fetchone()
    assert advanced["n"] == len(good) + len(bad)


def test_recurrence_whose_duration_was_cleared_uses_the_current_rate_and_others_still_run(
        dispatcher_env, committed_db):
    good = good_recurrences(committed_db, 2)
    specialist = specialist_with_rate(committed_db, minutes=45)
    cleared = add_recurrence(committed_db, create_person(committed_db, "client"), specialist, start_date=OCCURRENCE)
    committed_db.execute("update public.recurring_bookings set duration_minutes = null where id = %s", [cleared])

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    assert (answer["count"], answer["errors"]) == (3, [])
    session = sessions_of(committed_db, cleared)[0]
    assert session["ends_at"] - session["starts_at"] == timedelta(minutes=45)
    assert all(len(sessions_of(committed_db, g)) == 1 for g in good)


@pytest.mark.parametrize("shared_party", ["client", "specialist"])
def test_overlapping_recurrences_book_the_first_and_report_the_second(db, shared_party):
    """Two recurrences of one client (or one specialist) at overlapping times: the one
    whose specialist sorts first is booked, the other is reported, nothing is lost."""
    if shared_party == "client":
        client = create_person(db, "client")
        pairs = [(client, specialist_with_rate(db)), (client, specialist_with_rate(db))]
        reason = "The client already has a session at that time"
    else:
        specialist = specialist_with_rate(db)
        pairs = [(create_person(db, "client"), specialist), (create_person(db, "client"), specialist)]
        reason = "The specialist already has a session at that time"
    first, second = sorted(pairs, key=lambda pair: (str(pair[1].id), str(pair[0].id)))
    ids = [add_recurrence(db, c, s, start_date=OCCURRENCE, start_time=t) for (c, s), t in
           ((first, "10:00"), (second, "10:30"))]
    bystander = good_recurrences(db, 1)[0]

    rows = dispatch_sql(db, RUN_AT)

    outcomes = {r["recurring_id"]: (r["outcome"], r["error"]) for r in rows}
    # Written in the order (specialist, start): the 10:00 one of the first specialist wins.
    assert outcomes == {ids[0]: ("created", None), ids[1]: ("error", reason), bystander: ("created", None)}
    assert all(recurrence(db, i)["next_booking_date"] == date(2026, 6, 10) for i in ids)


def test_booking_made_while_the_dispatcher_runs_is_respected(db):
    """A session booked by someone else after the dispatcher's checks makes its plain insert
    fail; the dispatcher then inserts one by one, skipping what conflicts, and reports it."""
    good = good_recurrences(db, 2)
    specialist, client = specialist_with_rate(db), create_person(db, "client")
    raced = add_recurrence(db, client, specialist, start_date=OCCURRENCE)
    other_client = create_person(db, "client")
    # Stands in for booking-create committing between the checks and the insert: when the
    # dispatcher writes this recurrence's session, the same slot gets booked first.
    db.execute(f"""
        create function pg_temp.book_first() returns trigger language plpgsql as $$
        begin
          insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
          values (new.specialist_id, '{other_client.id}', new.starts_at, new.ends_at);
          return new;
        end $$;
        create trigger book_first before insert on public.sessions for each row
          when (new.recurring_booking_id = '{raced}') execute function pg_temp.book_first();
    """)

    steps: list[str] = []
    db.add_notice_handler(lambda notice: steps.append(notice.message_primary or ""))
    db.execute("select set_config('app.dispatch_timing', 'on', true)")

    rows = dispatch_sql(db, RUN_AT)

    assert any(step.startswith("dispatch step insert overlapping or contested sessions") for step in steps), \
        "the one-by-one path ran"
    outcomes = {r["recurring_id"]: (r["outcome"], r["error"]) for r in rows}
    assert outcomes == {good[0]: ("created", None), good[1]: ("created", None),
                        raced: ("error", "The specialist already has a session at that time")}
    assert sessions_of(db, raced) == []
    booked = db.execute("select client_id from public.sessions where specialist_id = %s", [specialist.id]).fetchall()
    assert booked == [{"client_id": other_client.id}], "the other booking stands"
    assert all(len(sessions_of(db, g)) == 1 for g in good)


def test_recurrence_dated_at_minus_infinity_is_refused(db):
    client, specialist = create_person(db, "client"), specialist_with_rate(db)
    with pytest.raises(psycopg.errors.CheckViolation, match="recurring_bookings_finite_dates"):
        add_recurrence(db, client, specialist, start_date="-infinity")


def test_answer_has_the_seed_shape_and_the_audit_entry_counts_it(dispatcher_env, committed_db):
    good = good_recurrences(committed_db, 2)
    bad = unbookable(committed_db, "no-rate")

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    made = committed_db.execute(
        "select id from public.sessions where recurring_booking_id = any(%s)", [good]).fetchall()
    assert answer == {
        "success": True,
        "message": "Dispatched 2 recurring bookings",
        "count": 2,
        "bookings": answer["bookings"],
        "errors": [{"recurring_id": str(bad), "occurrence_date": "2026-06-03", "error": "No rates found"}],
        "dry_run": False,
    }
    assert sorted(answer["bookings"]) == sorted(str(r["id"]) for r in made)
    audit = committed_db.execute(
        "select * from public.audit_log where action = 'recurring_bookings_dispatched'").fetchall()
    assert len(audit) == 1
    assert audit[0]["status"] == "success_with_errors"
    assert audit[0]["actor_id"] is None and audit[0]["entity_type"] == "recurring_bookings"
    assert audit[0]["new_values"]["dispatched"] == 2 and audit[0]["new_values"]["errors"] == 1
    history = committed_db.execute(
        "select to_status, changed_by from public.booking_status_history where session_id = any(%s)",
        [[r["id"] for r in made]]).fetchall()
    assert history == [{"to_status": "confirmed", "changed_by": None}] * 2, "each new session has its history row"


def test_clean_run_is_audited_as_success(dispatcher_env, committed_db):
    good_recurrences(committed_db, 1)

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    assert (answer["count"], answer["errors"]) == (1, [])
    audit = committed_db.execute(
        "select status, new_values from public.audit_log where action = 'recurring_bookings_dispatched'").fetchone()
    assert audit["status"] == "success"
    assert (audit["new_values"]["dispatched"], audit["new_values"]["errors"]) == (1, 0)


def test_missed_occurrences_after_an_outage_are_reported_and_audited(dispatcher_env, committed_db):
    # The last run was about ten days ago: 25 May has passed; 1 and 8 June are within the horizon.
    client, specialist = create_person(committed_db, "client"), specialist_with_rate(committed_db)
    late = add_recurrence(committed_db, client, specialist, start_date=date(2026, 5, 11),
                          next_booking_date=date(2026, 5, 25))
    on_time = good_recurrences(committed_db, 1)[0]

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    # 1 June 10:00 is eight hours after the run: inside the booking rules' minimum notice.
    assert answer["errors"] == [
        {"recurring_id": str(late), "occurrence_date": "2026-05-25", "error": dispatcher.MISSED},
        {"recurring_id": str(late), "occurrence_date": "2026-06-01",
         "error": "Sessions must be booked at least 24 hours ahead"}]
    assert [s["occurrence_date"] for s in sessions_of(committed_db, late)] == [date(2026, 6, 8)]
    assert len(sessions_of(committed_db, on_time)) == 1
    audit = committed_db.execute(
        "select status, new_values from public.audit_log where action = 'recurring_bookings_dispatched'").fetchone()
    assert audit["status"] == "success_with_errors"
    assert {k: audit["new_values"][k] for k in ("dispatched", "errors", "missed")} == \
        {"dispatched": 2, "errors": 2, "missed": 1}


def test_horizon_comes_from_the_dispatch_horizon_days_setting(dispatcher_env, committed_db):
    near = good_recurrences(committed_db, 1, start=date(2026, 6, 3))[0]
    far = good_recurrences(committed_db, 1, start=date(2026, 6, 12))[0]
    dispatcher_env.set(DISPATCH_HORIZON_DAYS="3")

    answer = dispatcher.dispatch(run_at=RUN_AT)

    assert answer["count"] == 1
    assert (len(sessions_of(committed_db, near)), len(sessions_of(committed_db, far))) == (1, 0)


# -- idempotency and concurrency ------------------------------------------------------------

def test_second_run_the_same_day_creates_and_reports_nothing_new(dispatcher_env, committed_db):
    good_recurrences(committed_db, 4)
    unbookable(committed_db, "exception-day")

    first = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)
    second = dispatcher.dispatch(run_at=RUN_AT + timedelta(hours=9), horizon_days=7)

    assert (first["count"], len(first["errors"])) == (4, 1)
    assert (second["count"], second["bookings"], second["errors"]) == (0, [], [])
    total = committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"]
    assert total == 4


def test_two_runs_at_once_create_each_session_exactly_once(dispatcher_env, committed_db):
    good = good_recurrences(committed_db, 12)
    # Two weeks of horizon: each recurrence has two occurrences (3 and 10 June).
    barrier = threading.Barrier(2, timeout=30)
    answers: list[dict] = []
    failures: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            answers.append(dispatcher.dispatch(run_at=RUN_AT, horizon_days=14))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert failures == []
    assert sorted(a["count"] for a in answers) == [0, 24], "one run made everything, the other found nothing"
    rows = committed_db.execute(
        """select recurring_booking_id, occurrence_date, count(*) as n from public.sessions
           group by 1, 2""").fetchall()
    assert len(rows) == 24 and all(r["n"] == 1 for r in rows)
    assert {r["recurring_booking_id"] for r in rows} == set(good)


def test_run_that_deadlocks_with_a_concurrent_booking_is_retried(dispatcher_env, committed_db, monkeypatch):
    good_recurrences(committed_db, 2)
    real_run, attempts = dispatcher._run_once, []

    def deadlock_once(*args):
        attempts.append(args)
        if len(attempts) == 1:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return real_run(*args)

    monkeypatch.setattr(dispatcher, "_run_once", deadlock_once)

    answer = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)

    assert (len(attempts), answer["count"]) == (2, 2)


def test_run_that_keeps_deadlocking_fails_after_the_last_retry(dispatcher_env, monkeypatch):
    attempts = []

    def always_deadlock(*args):
        attempts.append(args)
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(dispatcher, "_run_once", always_deadlock)

    with pytest.raises(psycopg.errors.DeadlockDetected):
        dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)
    assert len(attempts) == dispatcher.DEADLOCK_RETRIES


# -- dry run --------------------------------------------------------------------------------

def snapshot(conn: psycopg.Connection) -> dict[str, str]:
    """A fingerprint of every table a dispatch writes."""
    return {table: conn.execute(f"select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as h "
                                f"from {table} t").fetchone()["h"]
            for table in ("public.sessions", "public.recurring_bookings", "public.audit_log",
                          "public.booking_status_history")}


def test_dry_run_writes_nothing_and_reports_what_a_real_run_creates(dispatcher_env, committed_db):
    good_recurrences(committed_db, 3)
    unbookable(committed_db, "client-double-booked")
    before = snapshot(committed_db)

    dry = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7, dry_run=True)

    assert snapshot(committed_db) == before, "sessions, recurrences, audit and history unchanged"
    assert (dry["dry_run"], dry["count"], dry["message"]) == (True, 3, "Would dispatch 3 recurring bookings")
    real = dispatcher.dispatch(run_at=RUN_AT, horizon_days=7)
    assert real["count"] == dry["count"]
    assert real["errors"] == dry["errors"]
    assert len(real["bookings"]) == 3


# -- calendar events ------------------------------------------------------------------------

def next_days_recurrences(conn: psycopg.Connection, count: int) -> None:
    """`count` recurrences of one specialist (UTC) starting over six days from the day after
    tomorrow (past the booking rules' 24-hour notice), an hour apart, so that a dispatch now
    with the default 7-day horizon creates exactly `count` sessions."""
    specialist = specialist_with_rate(conn, zone="UTC")
    client = create_person(conn, "client")
    conn.execute(
        """insert into public.recurring_bookings (user_id, specialist_id, frequency, start_date, start_time,
                                                  timezone, duration_minutes)
           select %s, %s, 'weekly', current_date + 2 + i %% 6, make_time(i / 6, 0, 0), 'UTC', 50
           from generate_series(0, %s - 1) i""",
        [client.id, specialist.id, count])


def test_created_sessions_get_their_events_in_batches_of_at_most_fifty(functions_env, committed_db):
    next_days_recurrences(committed_db, 120)

    answer = dispatcher.dispatch()

    assert answer["count"] == 120
    batches = functions_env.server.batch_requests()
    assert [len(b.parts) for b in batches] == [50, 50, 20]
    events = functions_env.server.events("primary")
    assert set(events) == {uuid.UUID(b).hex for b in answer["bookings"]}
    unsynced = committed_db.execute(
        "select count(*) as n from public.sessions where calendar_synced_at is null").fetchone()["n"]
    assert unsynced == 0


RETRIES = {
    "the calendar-sync job": lambda: calendar_sync.run_job(),
    "the next dispatch": lambda: dispatcher.dispatch(),
}


@pytest.mark.parametrize("retry", RETRIES.values(), ids=list(RETRIES))
def test_calendar_outage_keeps_the_sessions_and_their_events_are_created_later(functions_env, committed_db, retry):
    next_days_recurrences(committed_db, 60)
    functions_env.server.fail(503, times=None)

    answer = dispatcher.dispatch()

    assert answer["count"] == 60, "sessions do not wait for the calendar"
    pending = committed_db.execute(
        "select count(*) as n from public.sessions where calendar_synced_at is null "
        "and google_calendar_event_id is not null").fetchone()["n"]
    assert pending == 60
    assert functions_env.server.events("primary") == {}

    functions_env.server.reset()
    retry()

    assert set(functions_env.server.events("primary")) == {uuid.UUID(b).hex for b in answer["bookings"]}
    assert all(len(b.parts) <= 50 for b in functions_env.server.batch_requests())
    synced = committed_db.execute(
        "select count(*) as n from public.sessions where calendar_synced_at is not null").fetchone()["n"]
    assert synced == 60
