"""Booking throughput: concurrent clients booking through the served booking-create.

    python -m tests.bench.booking_create                  # 16 specialists, 16 concurrent clients, 20 s
    python -m tests.bench.booking_create --seconds 15     # shorter
    python -m tests.bench.booking_create --bookings 2000  # a fixed number of bookings instead
    python -m tests.bench.booking_create --small          # 4 specialists, 4 clients, 40 bookings: a smoke run

Everything is started here and thrown away afterwards: a PostgreSQL cluster
(shared.ops.localpg, fsync off) with every migration, the local Calendar API server
of the tests (the real Google client library talks to it), and all functions served
by shared.ops.serve in a gunicorn subprocess, exactly as the README's run command does.

The data, set-based in SQL: N specialists in UTC, each with a current rate of 30
minutes and hours 06:00–22:00 every day, and 64 clients per specialist. Worker i
books only specialist i, walking through that specialist's free half-hours from two
days ahead, with its own clients in turn; so every booking is a real success path
(window, exceptions, notice, conflicts, calendar event, session, audit) and no two
workers contend for a slot. Each worker first books once unmeasured (connections,
token, caches), then books until the time or the number of bookings is reached.
Latency is the whole HTTP call as the client sees it.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg.rows import dict_row

from tests.bench.load import Answer, KeptAlive, Result, report, run_concurrently
from tests.bench.stack import served_stack
from tests.calendar_server import FakeCalendarServer
from tests.functions_fixtures import user_token

SLOT_MINUTES = 30
OPENS, CLOSES = 6, 22  # UTC hours of every day's window


@dataclass(frozen=True)
class Scale:
    specialists: int  # = concurrent clients: one worker per specialist
    clients_per_specialist: int = 64
    seconds: float | None = 20.0
    bookings: int | None = None  # measured bookings in all; overrides seconds

    @property
    def clients(self) -> int:
        return self.specialists * self.clients_per_specialist


FULL = Scale(specialists=16)
SMALL = Scale(specialists=4, clients_per_specialist=16, seconds=None, bookings=40)


def specialist_uuid(i: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"bench-s{i}".encode()).hexdigest())


def client_uuid(c: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"bench-c{c}".encode()).hexdigest())


# -- seeding --------------------------------------------------------------------------

SEED_STEPS: list[tuple[str, str]] = [
    ("users and profiles", """
        insert into auth.users (id, email, raw_user_meta_data)
        select md5('bench-s' || i)::uuid, 'specialist' || i || '@bench.test',
               jsonb_build_object('full_name', 'Specialist ' || i)
        from generate_series(0, %(specialists)s - 1) i
        union all
        select md5('bench-c' || c)::uuid, 'client' || c || '@bench.test', jsonb_build_object('full_name', 'Client ' || c)
        from generate_series(0, %(clients)s - 1) c
    """),
    ("specialist roles", """
        update public.profiles p set role = 'specialist', timezone = 'UTC'
          from generate_series(0, %(specialists)s - 1) i
         where p.id = md5('bench-s' || i)::uuid
    """),
    ("rates", """
        insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
        select md5('bench-s' || i)::uuid, 80, 'EUR', %(minutes)s, now() - interval '1 day'
        from generate_series(0, %(specialists)s - 1) i
    """),
    ("weekly hours", """
        insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
        select md5('bench-s' || i)::uuid, d, make_time(%(opens)s, 0, 0), make_time(%(closes)s, 0, 0)
        from generate_series(0, %(specialists)s - 1) i cross join generate_series(0, 6) d
    """),
]


def seed(url: str, scale: Scale) -> dict[str, int]:
    params = {"specialists": scale.specialists, "clients": scale.clients, "minutes": SLOT_MINUTES,
              "opens": OPENS, "closes": CLOSES}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        with conn.transaction():
            for _name, statement in SEED_STEPS:
                conn.execute(statement, params)
        conn.execute("vacuum analyze")
        return conn.execute(
            """select (select count(*) from public.profiles where role = 'specialist') as specialists,
                      (select count(*) from public.profiles where role = 'client') as clients,
                      (select count(*) from public.specialist_rates) as rates,
                      (select count(*) from public.availability_windows) as windows"""
        ).fetchone()


def slots(now: datetime) -> Iterator[datetime]:
    """Every bookable half-hour from two days ahead to 29 days ahead, in order."""
    day = (now + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    last = now + timedelta(days=29)
    while day < last:
        for n in range((CLOSES - OPENS) * 60 // SLOT_MINUTES):
            yield day + timedelta(hours=OPENS, minutes=n * SLOT_MINUTES)
        day += timedelta(days=1)


# -- booking ----------------------------------------------------------------------------

class Worker:
    """One concurrent client: books with one specialist, with its own clients in turn."""

    def __init__(self, index: int, scale: Scale, base_url: str, jwt_secret: str, now: datetime):
        self.specialist = specialist_uuid(index)
        first = index * scale.clients_per_specialist
        self.tokens = [user_token(client_uuid(c), secret=jwt_secret)
                       for c in range(first, first + scale.clients_per_specialist)]
        self.slots = slots(now)
        self.http = KeptAlive(f"{base_url}/booking-create")

    def book(self, j: int) -> Answer:
        """Booking j: the next free slot; StopIteration when this specialist's month is full."""
        starts_at = next(self.slots)
        body = {"specialist_id": str(self.specialist), "starts_at": starts_at.isoformat()}
        return self.http.post_json(body, self.tokens[j % len(self.tokens)])


def book_concurrently(scale: Scale, base_url: str, jwt_secret: str) -> Result:
    now = datetime.now(timezone.utc)
    workers = [Worker(i, scale, base_url, jwt_secret, now) for i in range(scale.specialists)]
    if scale.bookings is not None:
        tickets = itertools.count()
        return run_concurrently(workers, Worker.book, lambda _j, _elapsed: next(tickets) < scale.bookings)
    return run_concurrently(workers, Worker.book, lambda _j, elapsed: elapsed < scale.seconds)


def check(url: str, calendar: FakeCalendarServer, out=print) -> tuple[int, int]:
    """Every session has its event and every event its session."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        ids = {r["google_calendar_event_id"] for r in conn.execute(
            "select google_calendar_event_id from public.sessions where status = 'confirmed'")}
    events = set(calendar.events("primary"))
    out(f"checked: {len(ids)} confirmed sessions, {len(events)} calendar events"
        + ("" if ids == events else " (MISMATCH)"))
    return len(ids), len(events)


# -- the command -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 4 specialists, 40 bookings")
    parser.add_argument("--seconds", type=float, help="how long to book (default 20)")
    parser.add_argument("--bookings", type=int, help="book this many instead of booking for a time")
    parser.add_argument("--specialists", type=int, help="specialists = concurrent clients (default 16)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads of the served functions")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    if args.specialists:
        scale = Scale(args.specialists, scale.clients_per_specialist, scale.seconds, scale.bookings)
    if args.bookings:
        scale = Scale(scale.specialists, scale.clients_per_specialist, None, args.bookings)
    elif args.seconds:
        scale = Scale(scale.specialists, scale.clients_per_specialist, args.seconds, None)

    with served_stack(args.threads) as stack:
        url, calendar, served, jwt_secret = stack.database_url, stack.calendar, stack.served, stack.jwt_secret
        counts = seed(url, scale)
        print(f"seeded {counts['specialists']} specialists, {counts['clients']} clients, "
              f"{counts['rates']} rates, {counts['windows']} weekly windows")
        amount = f"{scale.bookings} bookings" if scale.bookings is not None else f"{scale.seconds:g} s"
        print(f"booking: {scale.specialists} concurrent clients, one specialist each, {amount}, "
              f"served with {args.threads} gunicorn threads")
        result = book_concurrently(scale, served.base_url, jwt_secret)
        report(result, "bookings")
        sessions, events = check(url, calendar)
        ok = not result.failures and sessions == events == result.succeeded + result.warmed
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
