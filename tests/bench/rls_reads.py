"""Reads under row-level security on a table of millions of sessions.

    python -m tests.bench.rls_reads            # 10,000 specialists, 200,000 clients, 2,000,000 sessions
    python -m tests.bench.rls_reads --small    # 100 / 2,000 / 20,000, 50 calls: a smoke run in seconds
    DATABASE_URL=postgresql://… python -m tests.bench.rls_reads   # an existing, migrated, empty database
    DATABASE_URL=… python -m tests.bench.rls_reads --no-seed       # measure again what a run seeded there

Without DATABASE_URL it starts a throwaway cluster (shared.ops.localpg, fsync off),
gives it 1 GB of shared_buffers (a production server sizes this to its RAM; the
default 128 MB would measure cache misses, not RLS), migrates it and seeds it.

The data, made set-based in SQL (about 2½ minutes on 2 cores, two writers): specialist
i has one session a day at hour 8 + i % 10 (UTC) for 200 days, 100 before today and
100 after; slot k goes to client i·20 + k % 20, so each client sees one specialist
every 20 days (10 sessions) and no client or specialist ever has two sessions at once
(the exclusion constraints check it as the rows go in). Rows are inserted in time
order, so one specialist's sessions are spread over the whole table, as years of
bookings would be. Confirmed sessions go in through the normal triggers (status
history, foreign keys, exclusion constraints), with the dispatcher's bulk flag. One
slot in 17 is a cancelled session: those are written with session_replication_role =
replica, together with their cancellation record and both status-history rows,
because a session that has started can no longer be cancelled through
booking_cancellations. Every past confirmed session has a note (author check on).

Each measured call is one PostgREST request: BEGIN READ ONLY; set_config('role',
'authenticated', true) and the JWT claims; the query; COMMIT; for a fresh random
specialist or client each call. The "owner" rows make the same request as the table
owner (the role is not switched, so RLS does not apply), with the filter written out
and the names joined directly, as the baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
from psycopg.rows import dict_row


@dataclass(frozen=True)
class Scale:
    specialists: int
    clients_per_specialist: int = 20
    days: int = 200  # one session per specialist per day
    calls: int = 1000

    @property
    def clients(self) -> int:
        return self.specialists * self.clients_per_specialist

    @property
    def sessions(self) -> int:
        return self.specialists * self.days


FULL = Scale(specialists=10_000)
SMALL = Scale(specialists=100, calls=50)


# -- seeding --------------------------------------------------------------------------

def specialist_uuid(i: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"s{i}".encode()).hexdigest())


def client_uuid(c: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"c{c}".encode()).hexdigest())


# Which (specialist i, day k) slots are cancelled sessions: one in 17.
CANCELLED = "(i + k) %% 17 = 0"

# Every slot of this worker's share of specialists (i %% parts = part), in time order.
SESSION_SLOTS = """
    select md5('s' || i)::uuid as specialist_id,
           md5('c' || (i * %(clients_per_specialist)s + k %% %(clients_per_specialist)s))::uuid as client_id,
           t.starts_at,
           t.starts_at + interval '50 minutes' as ends_at,
           case when k < %(clients_per_specialist)s then 'initial' else 'follow_up' end as session_type,
           'BK-BENCH-' || lpad((k * %(specialists)s + i)::text, 9, '0') as booking_reference,
           (""" + CANCELLED + """) as cancelled,
           k
    from generate_series(0, %(days)s - 1) k
    cross join generate_series(%(part)s, %(specialists)s - 1, %(parts)s) i
    cross join lateral (
      select date_trunc('day', now()) - (%(days)s / 2) * interval '1 day'
             + k * interval '1 day' + (8 + i %% 10) * interval '1 hour' as starts_at
    ) t
"""


@dataclass(frozen=True)
class Step:
    name: str
    statements: list[str]
    parallel: bool = False  # split over WORKERS connections, each with its share (part of parts)


WORKERS = 2  # the machine's cores; the big inserts are CPU-bound in the server

SEED_STEPS: list[Step] = [
    Step("users and profiles", ["""
        insert into auth.users (id, email, raw_user_meta_data)
        select md5('s' || i)::uuid, 'specialist' || i || '@bench.test',
               jsonb_build_object('full_name', 'Specialist ' || i)
        from generate_series(0, %(specialists)s - 1) i
        union all
        select md5('c' || c)::uuid, 'client' || c || '@bench.test', jsonb_build_object('full_name', 'Client ' || c)
        from generate_series(0, %(clients)s - 1) c
    """]),
    Step("specialist roles, everyone's timezone", ["""
        update public.profiles p
           set role = 'specialist',
               timezone = (array['Europe/London', 'America/New_York', 'Asia/Tokyo', 'UTC'])[1 + i %% 4]
          from generate_series(0, %(specialists)s - 1) i
         where p.id = md5('s' || i)::uuid
    """, """
        update public.profiles p
           set timezone = (array['Europe/Berlin', 'America/Chicago', 'Australia/Sydney'])[1 + c %% 4]
          from generate_series(0, %(clients)s - 1) c
         where p.id = md5('c' || c)::uuid and c %% 4 <> 3
    """]),
    # What available_slots reads: one 50-minute rate and weekday hours 08:00–18:00 (local).
    Step("rates and weekly hours", ["""
        insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
        select md5('s' || i)::uuid, 90, 'EUR', 50, now() - interval '1 year'
        from generate_series(0, %(specialists)s - 1) i
    """, """
        insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
        select md5('s' || i)::uuid, d, '08:00', '18:00'
        from generate_series(0, %(specialists)s - 1) i cross join generate_series(1, 5) d
    """]),
    # The dispatcher's bulk path (sql/0007): no per-row party locks. Workers never share a
    # specialist or a client, so they cannot meet in the exclusion constraints.
    Step("confirmed sessions", ["set local app.bulk_session_insert = 'on'", """
        insert into public.sessions (specialist_id, client_id, starts_at, ends_at, blocked_until, session_type,
                                     booking_reference, price, currency)
        select specialist_id, client_id, starts_at, ends_at, ends_at, session_type, booking_reference, 90, 'EUR'
        from (""" + SESSION_SLOTS + """) slot
        where not cancelled
        order by k
    """], parallel=True),
    # A session that has started can no longer be cancelled, so past cancellations cannot be
    # replayed through booking_cancellations today. They are written as that path would have
    # left them, set-based with triggers off (replica): the session, its cancellation record,
    # and its two status changes.
    Step("cancelled sessions, as history", ["set local session_replication_role = replica", """
        insert into public.sessions (specialist_id, client_id, starts_at, ends_at, blocked_until, session_type,
                                     booking_reference, price, currency, status, cancelled_at, cancelled_by,
                                     cancellation_reason, created_at)
        select specialist_id, client_id, starts_at, ends_at, ends_at, session_type, booking_reference, 90, 'EUR',
               'cancelled', starts_at - interval '2 days', client_id, 'Schedule conflict',
               starts_at - interval '9 days'
        from (""" + SESSION_SLOTS + """) slot
        where cancelled
        order by k
    """, """
        insert into public.booking_cancellations (booking_id, cancelled_by, reason, created_at, cancelled_by_party, late)
        select id, cancelled_by, cancellation_reason, cancelled_at, 'client', starts_at < cancelled_at + interval '48 hours'
        from public.sessions where status = 'cancelled' and booking_reference like 'BK-BENCH-%%'
    """, """
        insert into public.booking_status_history (session_id, from_status, to_status, changed_by, reason, changed_at)
        select id, null, 'confirmed', null, null, created_at
        from public.sessions where status = 'cancelled' and booking_reference like 'BK-BENCH-%%'
        union all
        select id, 'confirmed', 'cancelled', cancelled_by, cancellation_reason, cancelled_at
        from public.sessions where status = 'cancelled' and booking_reference like 'BK-BENCH-%%'
    """]),
    Step("notes on past sessions", ["""
        insert into public.session_notes (booking_id, provider_id, notes, follow_up_actions, created_at, updated_at)
        select s.id, s.specialist_id,
               'Client reported progress with the exercises from last time. ' || repeat('Observation. ', 8),
               'Continue weekly journaling.',
               s.ends_at + interval '1 hour', s.ends_at + interval '1 hour'
        from public.sessions s
        where s.status = 'confirmed' and s.ends_at < now()
          and abs(hashtext(s.specialist_id::text)) %% %(parts)s = %(part)s
        order by s.starts_at
    """], parallel=True),
]


def run_step(url: str, step: Step, params: dict, part: int, parts: int) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set work_mem = '256MB'")
        with conn.transaction():
            return sum(max(conn.execute(statement, {**params, "part": part, "parts": parts}).rowcount, 0)
                       for statement in step.statements)


def seed(url: str, scale: Scale, log: Callable[[str], None] = print) -> dict[str, int]:
    """Writes the benchmark's data into an empty, migrated database and analyzes it;
    returns the row counts."""
    params = {"specialists": scale.specialists, "clients": scale.clients,
              "clients_per_specialist": scale.clients_per_specialist, "days": scale.days}
    for step in SEED_STEPS:
        started = time.perf_counter()
        parts = WORKERS if step.parallel else 1
        with ThreadPoolExecutor(parts) as pool:
            rows = sum(pool.map(lambda part: run_step(url, step, params, part, parts), range(parts)))
        log(f"  {step.name}: {rows:,} rows written in {time.perf_counter() - started:.1f} s")
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        started = time.perf_counter()
        conn.execute("set maintenance_work_mem = '512MB'")
        conn.execute("vacuum (analyze) public.profiles, public.sessions, public.session_notes,"
                     " public.booking_status_history, public.booking_cancellations, auth.users,"
                     " public.specialist_rates, public.availability_windows")
        log(f"  vacuum analyze: {time.perf_counter() - started:.1f} s")
        return {table: conn.execute(f"select count(*) as n from public.{table}").fetchone()["n"]
                for table in ("profiles", "sessions", "session_notes", "booking_status_history")}


# -- the reads --------------------------------------------------------------------------

@dataclass(frozen=True)
class Read:
    name: str
    who: str  # "specialist" or "client"
    under_rls: bool
    query: str  # %(me)s is the caller's id (owner queries only: under RLS the JWT says who)


UPCOMING_AS_OWNER = """
    select s.id, s.booking_reference, s.starts_at, s.ends_at,
           (s.starts_at at time zone v.timezone)::date as local_date,
           (s.starts_at at time zone v.timezone)::time as local_start_time,
           (s.ends_at at time zone v.timezone)::time as local_end_time,
           v.timezone as local_timezone, s.session_type, s.status,
           s.specialist_id, sp.full_name as specialist_name, s.client_id, cp.full_name as client_name
    from public.sessions s
    join public.profiles v on v.id = %(me)s
    join public.profiles sp on sp.id = s.specialist_id
    join public.profiles cp on cp.id = s.client_id
    where (s.specialist_id = %(me)s or s.client_id = %(me)s)
      and s.status = 'confirmed' and s.starts_at > now()
    order by s.starts_at
    limit 50
"""

READS = [
    Read("upcoming sessions", "specialist", True, "select * from public.upcoming_sessions limit 50"),
    Read("upcoming sessions", "specialist", False, UPCOMING_AS_OWNER),
    Read("upcoming sessions", "client", True, "select * from public.upcoming_sessions limit 50"),
    Read("upcoming sessions", "client", False, UPCOMING_AS_OWNER),
    Read("notes, filtered", "specialist", True,
         "select * from public.session_notes where provider_id = %(me)s order by created_at desc limit 50"),
    Read("notes, filtered", "specialist", False,
         "select * from public.session_notes where provider_id = %(me)s order by created_at desc limit 50"),
    Read("notes, filtered", "client", True,
         "select * from public.session_notes where booking_id in"
         " (select id from public.sessions where client_id = %(me)s)"),
    Read("notes, filtered", "client", False,
         "select * from public.session_notes where booking_id in"
         " (select id from public.sessions where client_id = %(me)s)"),
    Read("notes, policy only", "specialist", True, "select * from public.session_notes limit 50"),
    Read("notes, policy only", "client", True, "select * from public.session_notes limit 50"),
    # A booking page: one specialist's free slots over the next 30 days (sql/0019), as a signed-in client.
    Read("free slots, 30 days", "client", True,
         "select * from public.available_slots(%(specialist)s, current_date + 1, current_date + 30)"),
]


def claims_for(person_id: uuid.UUID) -> str:
    now = int(time.time())
    return json.dumps({"sub": str(person_id), "role": "authenticated", "aud": "authenticated",
                       "iat": now, "exp": now + 3600, "app_metadata": {"provider": "email"},
                       "user_metadata": {}})


def call(conn: psycopg.Connection, read: Read, person_id: uuid.UUID,
         specialist_id: uuid.UUID | None = None) -> list[dict]:
    """One request, the way PostgREST makes it, on an autocommit, read-only connection."""
    with conn.transaction():
        # The owner's requests have the same shape (claims set), minus the role switch that brings RLS in.
        conn.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                     ["authenticated" if read.under_rls else "none", claims_for(person_id)])
        return conn.execute(read.query, {"me": person_id, "specialist": specialist_id}).fetchall()


def people(scale: Scale) -> dict[str, Callable[[random.Random], uuid.UUID]]:
    return {
        "specialist": lambda rng: specialist_uuid(rng.randrange(scale.specialists)),
        "client": lambda rng: client_uuid(rng.randrange(scale.clients)),
    }


@dataclass
class Measurement:
    read: Read
    latencies_ms: list[float]
    rows: list[int]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def measure(conn: psycopg.Connection, read: Read, scale: Scale, calls: int, rng: random.Random) -> Measurement:
    pick = people(scale)[read.who]
    any_specialist = people(scale)["specialist"]
    for _ in range(min(20, calls)):  # warm the connection's prepared statements and the cache
        call(conn, read, pick(rng), any_specialist(rng))
    latencies, rows = [], []
    for _ in range(calls):
        person, specialist = pick(rng), any_specialist(rng)
        started = time.perf_counter()
        result = call(conn, read, person, specialist)
        latencies.append((time.perf_counter() - started) * 1000)
        rows.append(len(result))
    return Measurement(read, latencies, rows)


def report(measurements: list[Measurement], out=print) -> None:
    owner = {(m.read.name, m.read.who): m for m in measurements if not m.read.under_rls}
    out(f"{'read':<20} {'caller':<11} {'as':<6} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6} {'p50 RLS/owner':>14} {'p95 RLS/owner':>14}")
    for m in measurements:
        base = owner.get((m.read.name, m.read.who))
        ratio50 = ratio95 = ""
        if m.read.under_rls and base is not None:
            ratio50 = f"{m.percentile(50) / base.percentile(50):.2f}x"
            ratio95 = f"{m.percentile(95) / base.percentile(95):.2f}x"
        out(f"{m.read.name:<20} {m.read.who:<11} {'RLS' if m.read.under_rls else 'owner':<6} "
            f"{m.percentile(50):>8.2f} {m.percentile(95):>8.2f} {statistics.mean(m.rows):>6.1f} "
            f"{ratio50:>14} {ratio95:>14}")


def run(url: str, scale: Scale, calls: int, seed_data: bool = True, out=print,
        only: str | None = None) -> list[Measurement]:
    if seed_data:
        started = time.perf_counter()
        counts = seed(url, scale, log=out)
        out(f"seeded in {time.perf_counter() - started:.0f} s: "
            + ", ".join(f"{n:,} {table}" for table, n in counts.items()))
    rng = random.Random(20261121)
    measurements = []
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.read_only = True
        for read in READS:
            if only is None or only in read.name:
                measurements.append(measure(conn, read, scale, calls, rng))
    out(f"\n{calls:,} calls each, a fresh random caller per call; times are whole requests (BEGIN … COMMIT)")
    report(measurements, out=out)
    return measurements


def throwaway_cluster():
    from shared.ops.localpg import LocalCluster

    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="therapy-bench-pg-")), fast=True)
    cluster.init()
    with open(cluster.datadir / "postgresql.conf", "a") as conf:
        conf.write("shared_buffers = '1GB'\nmax_wal_size = '4GB'\ncheckpoint_timeout = '30min'\n")
    cluster.start()
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 100 specialists, 20,000 sessions")
    parser.add_argument("--calls", type=int, help="calls per read (default 1000, or 50 with --small)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway cluster and print its URL")
    parser.add_argument("--no-seed", action="store_true",
                        help="with DATABASE_URL: measure a database this script already seeded (same scale)")
    parser.add_argument("--only", help="measure only the reads whose name contains this (e.g. 'free slots')")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    calls = args.calls or scale.calls

    url = os.environ.get("DATABASE_URL")
    cluster = None
    try:
        if not url:
            from shared.ops.migrate import migrate

            cluster = throwaway_cluster()
            url = cluster.url()
            migrate(url, log=lambda _line: None)
        print(f"scale: {scale.specialists:,} specialists, {scale.clients:,} clients, {scale.sessions:,} sessions")
        run(url, scale, calls, seed_data=not (args.no_seed and cluster is None), only=args.only)
    finally:
        if cluster is not None:
            if args.keep:
                print(f"cluster kept: {cluster.url()} (directory {cluster.directory})")
            else:
                cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
