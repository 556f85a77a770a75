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
import http.client
import itertools
import json
import statistics
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Iterator

import psycopg
from psycopg.rows import dict_row

from tests.calendar_server import FakeCalendarServer
from tests.bench.stack import served_stack
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

@dataclass
class Result:
    latencies_ms: list[float]
    failures: list[str]
    succeeded: int = 0
    warmed: int = 0
    elapsed: float = 0.0


class Worker:
    """One concurrent client: books with one specialist, with its own clients in turn."""

    def __init__(self, index: int, scale: Scale, base_url: str, jwt_secret: str, now: datetime):
        self.specialist = specialist_uuid(index)
        first = index * scale.clients_per_specialist
        self.tokens = [user_token(client_uuid(c), secret=jwt_secret)
                       for c in range(first, first + scale.clients_per_specialist)]
        self.slots = slots(now)
        url = urllib.parse.urlsplit(f"{base_url}/booking-create")
        self.path = url.path
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        self.count = 0

    def book(self) -> tuple[float, int, str]:
        """One booking of the next slot: (latency in ms, HTTP status, body)."""
        starts_at = next(self.slots)
        token = self.tokens[self.count % len(self.tokens)]
        self.count += 1
        body = json.dumps({"specialist_id": str(self.specialist), "starts_at": starts_at.isoformat()})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        started = time.perf_counter()
        for attempt in (1, 2):  # a kept-alive connection the server closed is reopened once
            try:
                self.connection.request("POST", self.path, body=body, headers=headers)
                response = self.connection.getresponse()
                text = response.read().decode()
                break
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                if attempt == 2:
                    raise
        return (time.perf_counter() - started) * 1000, response.status, text


def book_concurrently(scale: Scale, base_url: str, jwt_secret: str) -> Result:
    now = datetime.now(timezone.utc)
    workers = [Worker(i, scale, base_url, jwt_secret, now) for i in range(scale.specialists)]
    result = Result([], [])
    lock = threading.Lock()
    tickets = itertools.count()
    clock: dict[str, float] = {}

    def start_clock() -> None:  # run once, as the barrier releases everyone
        clock["started"] = time.perf_counter()
        clock["deadline"] = clock["started"] + (scale.seconds or 0)

    go = threading.Barrier(scale.specialists + 1, action=start_clock)

    def attempt(worker: Worker, measured: bool) -> bool:
        """One booking, recorded; False when the worker should stop."""
        try:
            ms, status, text = worker.book()
        except StopIteration:
            return False  # this specialist's month is full
        except Exception as exc:  # counted, not fatal: the report says what went wrong
            ms, status, text = 0.0, 0, repr(exc)
        with lock:
            if status == 200 and measured:
                result.succeeded += 1
                result.latencies_ms.append(ms)
            elif status == 200:
                result.warmed += 1
            else:
                result.failures.append(f"{'' if measured else 'warm-up '}{status}: {text[:200]}")
        return True

    def run(worker: Worker) -> None:
        attempt(worker, measured=False)
        go.wait()
        while True:
            if scale.bookings is not None:
                with lock:
                    if next(tickets) >= scale.bookings:
                        return
            elif time.perf_counter() >= clock["deadline"]:
                return
            if not attempt(worker, measured=True):
                return

    threads = [threading.Thread(target=run, args=(w,), name=f"bench-{i}") for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    go.wait()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - clock["started"]
    return result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def report(result: Result, out=print) -> None:
    out(f"warm-up: {result.warmed} bookings (not measured)")
    out(f"bookings: {result.succeeded} succeeded, {len(result.failures)} failed")
    for failure in result.failures[:5]:
        out(f"  failure: {failure}")
    out(f"throughput: {result.succeeded / result.elapsed:.1f} bookings/s over {result.elapsed:.1f} s")
    if result.latencies_ms:
        out(f"latency ms: p50 {percentile(result.latencies_ms, 50):.1f}, p95 {percentile(result.latencies_ms, 95):.1f}, "
            f"p99 {percentile(result.latencies_ms, 99):.1f}, mean {statistics.mean(result.latencies_ms):.1f}")


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
        report(result)
        sessions, events = check(url, calendar)
        ok = not result.failures and sessions == events == result.succeeded + result.warmed
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
