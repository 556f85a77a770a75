"""available_slots against the booking rules, property-based (Hypothesis).

For generated weekly windows, exceptions, buffers, lengths, slot steps, existing
sessions of both parties, timezones and days (daylight-saving change days among
them), with a minimum notice that falls inside the day:

- every slot available_slots offers is accepted by the rules at the session door
  (the trigger booking-create's insert goes through);
- every start on the slot grid that is not offered is refused there;
- off-grid starts are accepted exactly when an oracle written here (zoneinfo,
  plain interval arithmetic) says the rules allow them, and the offered list is
  exactly the oracle's allowed grid.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import RULES_ON
from tests.support import create_person

UTC = timezone.utc
ZONES = ("Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC")
LENGTH_CHOICES = (30, 45, 50, 60, 90)


def dst_days(zone: ZoneInfo, first: date, last: date) -> list[date]:
    """Days on which the zone's offset changes (between the day's start and the next day's)."""
    out = []
    day = first
    while day <= last:
        today = datetime.combine(day, time(0), zone).utcoffset()
        tomorrow = datetime.combine(day + timedelta(days=1), time(0), zone).utcoffset()
        if today != tomorrow:
            out.append(day)
        day += timedelta(days=1)
    return out


def instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    """A local wall-clock time (minutes after the day's midnight; 1440 = the next midnight)
    as an instant: the first of two, or the offset before the change in a gap (fold=0)."""
    local = datetime.combine(day, time(0)) + timedelta(minutes=minutes)
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def merge(intervals):
    out: list[list[datetime]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [tuple(i) for i in out]


def subtract(intervals, holes):
    out = []
    for start, end in intervals:
        pieces = [(start, end)]
        for h_start, h_end in holes:
            pieces = [p for s, e in pieces for p in ((s, min(e, h_start)), (max(s, h_end), e)) if p[0] < p[1]]
        out.extend(pieces)
    return merge(out)


class Oracle:
    """The booking rules, written again from their description (sql/0019's header)."""

    def __init__(self, *, day, zone, windows, exceptions, lengths, buffer, notice_hours, advance_days, now,
                 specialist_sessions, client_sessions):
        self.lengths, self.buffer = lengths, buffer
        self.earliest = now + timedelta(hours=notice_hours)
        self.latest = now + timedelta(days=advance_days)
        self.specialist_sessions, self.client_sessions = specialist_sessions, client_sessions

        def span(start, end):
            return instant(day, start, zone), instant(day, end, zone)

        available = [span(0, 1440) if e["all_day"] else span(e["start"], e["end"])
                     for e in exceptions if e["is_available"]]
        off = [span(0, 1440) if e["all_day"] else span(e["start"], e["end"])
               for e in exceptions if not e["is_available"]]
        base = merge(available) if available else merge(span(s, e) for s, e in windows)
        self.stretches = subtract(base, merge(off))

    def grid(self, minutes: int, step: int):
        for start, end in self.stretches:
            t = start
            while t + timedelta(minutes=minutes) <= end:
                yield t
                t += timedelta(minutes=step)

    def allows(self, starts: datetime, minutes: int) -> bool:
        ends = starts + timedelta(minutes=minutes)
        return (minutes in self.lengths
                and self.earliest <= starts <= self.latest
                and any(s <= starts and ends <= e for s, e in self.stretches)
                and not any(s < ends + timedelta(minutes=self.buffer) and starts < blocked
                            for s, _e, blocked in self.specialist_sessions)
                and not any(s < ends and starts < e for s, e, _b in self.client_sessions))


def hhmm(minutes: int) -> str:
    return "24:00" if minutes == 1440 else f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def spans(draw, earliest=0, latest=1440, shortest=30):
    start = draw(st.integers(earliest, latest - shortest).map(lambda m: m - m % 5))
    end = draw(st.integers(start + shortest, latest).map(lambda m: min(latest, m - m % 5 + 5)))
    return start, max(end, start + 5)


@st.composite
def practices(draw):
    zone_name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    today = datetime.now(zone).date()
    changes = dst_days(zone, today + timedelta(days=3), today + timedelta(days=300))
    day = draw(st.sampled_from(changes) if changes and draw(st.booleans())
               else st.integers(3, 300).map(lambda n: today + timedelta(days=n)))
    exception = st.fixed_dictionaries({
        "is_available": st.booleans(), "all_day": st.booleans(),
        "span": spans(shortest=15)}).map(
        lambda e: {"is_available": e["is_available"], "all_day": e["all_day"],
                   "start": e["span"][0], "end": e["span"][1]})
    return {
        "zone_name": zone_name, "zone": zone, "day": day,
        "windows": draw(st.lists(spans(earliest=0, latest=1435), min_size=0, max_size=3)),
        "exceptions": draw(st.lists(exception, max_size=2)),
        "lengths": sorted(draw(st.sets(st.sampled_from(LENGTH_CHOICES), min_size=1, max_size=3))),
        "buffer": draw(st.sampled_from((0, 0, 10, 15, 30))),
        "step": draw(st.sampled_from((None, None, 15, 20))),
        "notice_shift_hours": draw(st.integers(-10, 10)),
        "ask_length": draw(st.booleans()),
        "specialist_sessions": draw(st.lists(st.tuples(st.integers(0, 1380), st.sampled_from((30, 50, 90))),
                                             max_size=3)),
        "client_sessions": draw(st.lists(st.tuples(st.integers(0, 1380), st.sampled_from((30, 60))), max_size=2)),
        "off_grid": draw(st.lists(st.integers(0, 1439), min_size=3, max_size=8)),
    }


def as_caller(conn, person, query, params):
    with conn.transaction(force_rollback=True):
        conn.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                     [person.db_role, json.dumps(person.claims)])
        return conn.execute(query, params).fetchall()


def accepted(conn, specialist_id, client_id, starts: datetime, minutes: int) -> bool:
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(RULES_ON)
            conn.execute("insert into public.sessions (specialist_id, client_id, starts_at, ends_at) "
                         "values (%s, %s, %s, %s)", [specialist_id, client_id, starts, starts + timedelta(minutes=minutes)])
    except psycopg.Error as exc:
        assert exc.sqlstate in {"TB010", "TB011", "TB012", "TB013", "TB014", "TB015", "TB016"}, exc
        return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(practice=practices())
def test_free_slots_are_exactly_what_the_rules_accept(db, practice):
    with db.transaction(force_rollback=True):
        run_example(db, practice)


def run_example(db, p):
    zone, day = p["zone"], p["day"]
    now = db.execute("select now() as now").fetchone()["now"]
    noon = instant(day, 720, zone)
    notice = min(8760, max(0, int((noon - now).total_seconds() // 3600) + p["notice_shift_hours"]))
    db.execute("update private.practice_settings set booking_min_notice_hours = %s, booking_max_advance_days = 365, "
               "slot_step_minutes = %s", [notice, p["step"]])

    specialist = create_person(db, "specialist", timezone=p["zone_name"])
    client, other_client = create_person(db, "client"), create_person(db, "client")
    elsewhere = create_person(db, "specialist")
    db.execute("update public.profiles set buffer_minutes = %s where id = %s", [p["buffer"], specialist.id])
    for minutes in p["lengths"]:
        db.execute("""insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes,
                                                           effective_from)
                      values (%s, %s, 'EUR', %s, now() - interval '1 day')""", [specialist.id, minutes * 2, minutes])
    weekday = (day.weekday() + 1) % 7
    for start, end in p["windows"]:
        db.execute("""insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
                      values (%s, %s, %s, %s)""", [specialist.id, weekday, hhmm(start), hhmm(end)])
    for e in p["exceptions"]:
        db.execute("""insert into public.specialist_availability_exceptions
                        (specialist_id, exception_date, is_available, all_day, start_time, end_time)
                      values (%s, %s, %s, %s, %s, %s)""",
                   [specialist.id, day, e["is_available"], e["all_day"],
                    None if e["all_day"] else hhmm(e["start"]), None if e["all_day"] else hhmm(e["end"])])
    # Existing sessions, written as an import (rules off); the constraints may refuse some.
    for (owner, party), sessions in (((specialist, other_client), p["specialist_sessions"]),
                                     ((elsewhere, client), p["client_sessions"])):
        for start, minutes in sessions:
            starts = instant(day, start, zone)
            try:
                with db.transaction():
                    db.execute("insert into public.sessions (specialist_id, client_id, starts_at, ends_at) "
                               "values (%s, %s, %s, %s)", [owner.id, party.id, starts, starts + timedelta(minutes=minutes)])
            except psycopg.errors.ExclusionViolation:
                pass
    stored = db.execute("select specialist_id, client_id, starts_at, ends_at, blocked_until from public.sessions "
                        "where specialist_id = %s or client_id = %s", [specialist.id, client.id]).fetchall()

    oracle = Oracle(day=day, zone=zone, windows=p["windows"], exceptions=p["exceptions"], lengths=p["lengths"],
                    buffer=p["buffer"], notice_hours=notice, advance_days=365, now=now,
                    specialist_sessions=[(s["starts_at"], s["ends_at"], s["blocked_until"]) for s in stored
                                         if s["specialist_id"] == specialist.id],
                    client_sessions=[(s["starts_at"], s["ends_at"], s["blocked_until"]) for s in stored
                                     if s["client_id"] == client.id])
    minutes = p["lengths"][-1] if p["ask_length"] else p["lengths"][0]
    step = p["step"] or minutes + p["buffer"]

    offered = [r["starts_at"] for r in as_caller(
        db, client, "select * from public.available_slots(%s, %s, %s, %s)",
        [specialist.id, day, day, minutes if p["ask_length"] else None])]

    grid = list(oracle.grid(minutes, step))
    assert offered == [t for t in grid if oracle.allows(t, minutes)], "offered = the oracle's allowed grid"
    for t in grid:
        assert accepted(db, specialist.id, client.id, t, minutes) == (t in offered), t
    for m in p["off_grid"]:
        t = instant(day, m, zone)
        assert accepted(db, specialist.id, client.id, t, minutes) == oracle.allows(t, minutes), (m, t)
