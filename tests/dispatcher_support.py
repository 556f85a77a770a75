"""Helpers for the recurring-dispatcher tests: specialists with a rate, recurrences,
and the dispatcher's SQL function called the way shared.dispatcher calls it.

Recurrences are written as the superuser with an explicit ``created_at`` long ago,
so that fixed ``run_at`` values in the past are valid dispatch moments (occurrences
dated before a recurrence existed are neither booked nor reported).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import psycopg

from tests.support import Person, create_person

LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)
RUN_TIME = time(2, 0)  # the daily job runs at 02:00 UTC


def run_at(day: date) -> datetime:
    """The daily job's moment on `day`."""
    return datetime.combine(day, RUN_TIME, timezone.utc)


def specialist_with_rate(conn: psycopg.Connection, *, zone: str = "Europe/London", minutes: int = 50,
                         amount: str = "90.00", currency: str = "EUR", rate: bool = True,
                         rate_from: datetime = LONG_AGO, hours: tuple[str, str] | None = ("00:00", "24:00")) -> Person:
    """A specialist with a rate and, by default, working hours around the clock every day
    (so the recurrence tables test dates and times, not hours; `hours=None` gives none)."""
    specialist = create_person(conn, "specialist", timezone=zone)
    if hours:
        conn.execute(
            """insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
               select %s, d, %s, %s from generate_series(0, 6) d""", [specialist.id, *hours])
    if rate:
        conn.execute(
            """insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
               values (%s, %s, %s, %s, %s)""",
            [specialist.id, Decimal(amount), currency, minutes, rate_from],
        )
    return specialist


def add_recurrence(conn: psycopg.Connection, client: Person, specialist: Person, *, frequency: str = "weekly",
                   start_date: date | str, start_time: str = "10:00", zone: str | None = None,
                   end_date: date | str | None = None, duration_minutes: int | None = 50,
                   is_active: bool = True, next_booking_date: date | str | None = None,
                   created_at: datetime = LONG_AGO) -> uuid.UUID:
    return conn.execute(
        """insert into public.recurring_bookings (user_id, specialist_id, frequency, start_date, end_date, start_time,
                                                  timezone, duration_minutes, is_active, next_booking_date, created_at)
           values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id""",
        [client.id, specialist.id, frequency, start_date, end_date, start_time, zone, duration_minutes,
         is_active, next_booking_date, created_at],
    ).fetchone()["id"]


def dispatch_sql(conn: psycopg.Connection, moment: datetime, horizon_days: int = 7,
                 with_calendar: bool = False) -> list[dict]:
    """One run of private.dispatch_recurring_bookings in the caller's transaction."""
    return conn.execute("select * from private.dispatch_recurring_bookings(%s, %s, %s)",
                        [moment, horizon_days, with_calendar]).fetchall()


def recurrence(conn: psycopg.Connection, recurring_id: uuid.UUID) -> dict:
    return conn.execute("select * from public.recurring_bookings where id = %s", [recurring_id]).fetchone()


def sessions_of(conn: psycopg.Connection, recurring_id: uuid.UUID) -> list[dict]:
    return conn.execute(
        "select * from public.sessions where recurring_booking_id = %s order by starts_at", [recurring_id]
    ).fetchall()


def book(conn: psycopg.Connection, specialist: Person, client: Person, starts_at: datetime,
         minutes: int = 50) -> uuid.UUID:
    """A confirmed one-off session, as booking-create would store it."""
    return conn.execute(
        """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
           values (%s, %s, %s, %s) returning id""",
        [specialist.id, client.id, starts_at, starts_at + timedelta(minutes=minutes)],
    ).fetchone()["id"]
