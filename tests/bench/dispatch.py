"""Recurring-booking dispatch at scale, through the served recurring-dispatcher.

    python -m tests.bench.dispatch                        # 100,000 due recurring bookings
    python -m tests.bench.dispatch --large                # 100,000 then 1,000,000 (takes a while)
    python -m tests.bench.dispatch --sizes 100000,300000  # any sizes, to see how it grows
    python -m tests.bench.dispatch --small                # 2,000: a smoke run in seconds
    python -m tests.bench.dispatch --breakdown            # also time each step of the SQL function
    python -m tests.bench.dispatch --floor                # also the same rows into a bare table

Everything is started here and thrown away afterwards: a PostgreSQL cluster
(shared.ops.localpg, fsync off, 1 GB of shared_buffers) and, per size, a fresh database with every migration
and all functions served by shared.ops.serve in a gunicorn subprocess (calendar sync
off: this measures the dispatcher, not Google).

The data, set-based in SQL: N recurring bookings over N / 10 specialists, each with a
current rate; every recurrence has its own client, so no client is ever double-booked;
a specialist's ten recurrences start on the same day an hour apart (08:00 to 17:00 in
the specialist's timezone, one of four), so none overlap; the frequencies are mixed
(weekly, biweekly, monthly) and every one is due with exactly one occurrence within
the 7-day horizon. So one dispatch creates N sessions (with their status history,
through every constraint and trigger) and moves N recurrences on.

Printed per size: the wall time of the dispatch as the scheduler sees it (one HTTP
call, answer included), the time of an immediate second run (which creates nothing),
and the peak memory (VmHWM) of the gunicorn worker that ran it. With --breakdown the
SQL function first runs on a copy of the data with its step timings on
(``app.dispatch_timing``), and each step is printed. With --floor the same N rows
(one session per recurrence, the same parties and times) also go into a bare table,
first with only its primary key, then with only the two no-overlap exclusion
constraints that sessions carry: what PostgreSQL needs for those rows before any
foreign key, index, trigger or dispatch logic, a lower bound for the dispatch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
from psycopg.rows import dict_row

from shared.ops.localpg import LocalCluster, free_port
from shared.ops.migrate import migrate
from tests.functions_fixtures import ServedFunctions, served_environment, service_token

PER_SPECIALIST = 10  # recurrences per specialist, an hour apart
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "UTC")
# As tests/bench/rls_reads.py: a production server sizes its buffers to its RAM; with the
# defaults (128 MB, 1 GB of WAL) a million sessions would measure evictions and checkpoints.
SERVER_SETTINGS = "shared_buffers = '1GB'\nmax_wal_size = '4GB'\ncheckpoint_timeout = '30min'\n"
DEFAULT_SIZES = (100_000,)
LARGE_SIZES = (100_000, 1_000_000)
SMALL_SIZES = (2_000,)

SEED_STEPS: list[tuple[str, str]] = [
    ("users and profiles", """
        insert into auth.users (id, email, raw_user_meta_data)
        select md5('dispatch-s' || i)::uuid, 'specialist' || i || '@bench.test',
               jsonb_build_object('full_name', 'Specialist ' || i)
        from generate_series(0, %(specialists)s - 1) i
        union all
        select md5('dispatch-c' || c)::uuid, 'client' || c || '@bench.test',
               jsonb_build_object('full_name', 'Client ' || c)
        from generate_series(0, %(recurrences)s - 1) c
    """),
    ("specialist roles and timezones", """
        update public.profiles p
           set role = 'specialist', timezone = (%(zones)s::text[])[i %% cardinality(%(zones)s::text[]) + 1]
          from generate_series(0, %(specialists)s - 1) i
         where p.id = md5('dispatch-s' || i)::uuid
    """),
    ("rates", """
        insert into public.specialist_rates (specialist_id, amount, currency, duration_minutes, effective_from)
        select md5('dispatch-s' || i)::uuid, 80, 'EUR', 50, now() - interval '30 days'
        from generate_series(0, %(specialists)s - 1) i
    """),
    # Working hours around the clock every day: the seed measures dispatch, not refusals.
    ("weekly hours", """
        insert into public.availability_windows (specialist_id, day_of_week, start_time, end_time)
        select md5('dispatch-s' || i)::uuid, d, '00:00', '24:00'
        from generate_series(0, %(specialists)s - 1) i cross join generate_series(0, 6) d
    """),
    ("recurring bookings", """
        insert into public.recurring_bookings (user_id, specialist_id, frequency, start_date, start_time,
                                               timezone, duration_minutes)
        select md5('dispatch-c' || c)::uuid, md5('dispatch-s' || s)::uuid,
               (array['weekly', 'weekly', 'biweekly', 'monthly'])[c %% 4 + 1],
               current_date + 2 + s %% 5, make_time(8 + c %% %(per)s, 0, 0),
               (%(zones)s::text[])[s %% cardinality(%(zones)s::text[]) + 1], 50
        from generate_series(0, %(recurrences)s - 1) c, lateral (select c / %(per)s as s) spec
    """),
]


@dataclass(frozen=True)
class Run:
    """One call of the served dispatcher."""

    seconds: float
    status: int
    count: int
    errors: int
    body_bytes: int


@dataclass(frozen=True)
class SizeResult:
    recurrences: int
    seed_seconds: float
    first: Run
    second: Run
    sessions: int
    peak_kib_before: int
    peak_kib_after: int
    breakdown: list[tuple[str, float]]
    floor: list[tuple[str, float]]


# -- seeding --------------------------------------------------------------------------------

def seed(url: str, recurrences: int, log: Callable[[str], None] = print) -> dict[str, int]:
    params = {"recurrences": recurrences, "specialists": -(-recurrences // PER_SPECIALIST),
              "per": PER_SPECIALIST, "zones": list(ZONES)}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        with conn.transaction():
            for name, statement in SEED_STEPS:
                started = time.perf_counter()
                conn.execute(statement, params)
                log(f"  seeded {name} in {time.perf_counter() - started:.1f} s")
        conn.execute("vacuum analyze")
        return conn.execute(
            """select (select count(*) from public.profiles where role = 'specialist') as specialists,
                      (select count(*) from public.profiles where role = 'client') as clients,
                      (select count(*) from public.recurring_bookings) as recurrences,
                      (select count(distinct user_id) from public.recurring_bookings) as distinct_clients"""
        ).fetchone()


# -- the served function --------------------------------------------------------------------

def serve(url: str, jwt_secret: str, threads: int = 4) -> ServedFunctions:
    """All functions in a gunicorn subprocess on `url`, calendar sync off."""
    port = free_port()
    environment = served_environment(
        database_url=url, public_url=f"http://127.0.0.1:{port}/functions/v1",
        calendar_api_url="http://127.0.0.1:9/calendar/v3/", service_account={}, jwt_secret=jwt_secret,
        link_secret="bench-link-secret-" + uuid.uuid4().hex,
        GOOGLE_SERVICE_ACCOUNT_JSON="",  # empty = unset: calendar sync off
    )
    return ServedFunctions(port, environment, threads=threads).start()


def dispatch(base_url: str, jwt_secret: str, body: dict | None = None) -> Run:
    """One POST to recurring-dispatcher as the scheduler makes it; the whole call is timed."""
    url = urllib.parse.urlsplit(f"{base_url}/recurring-dispatcher")
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=3600)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {service_token(secret=jwt_secret)}"}
    try:
        started = time.perf_counter()
        connection.request("POST", url.path, body=json.dumps(body or {}), headers=headers)
        response = connection.getresponse()
        raw = response.read()
        seconds = time.perf_counter() - started
    finally:
        connection.close()
    answer = json.loads(raw)
    if response.status != 200:
        raise RuntimeError(f"dispatch answered {response.status}: {raw[:500]!r}")
    return Run(seconds, response.status, answer["count"], len(answer["errors"]), len(raw))


def worker_pid(master_pid: int) -> int:
    """The gunicorn worker: the served process's child."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(master_pid):
            return int(status.parent.name)
    raise RuntimeError(f"no gunicorn worker under process {master_pid}")


def peak_memory_kib(pid: int) -> int:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


def step_breakdown(url: str) -> list[tuple[str, float]]:
    """Runs the SQL function once with its step timings on, rolled back; (step, seconds) in order."""
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze")  # a fresh copy: statistics and hint bits as on the original
    with psycopg.connect(url) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("set client_min_messages = notice")
        conn.execute("select set_config('app.dispatch_timing', 'on', true)")
        conn.execute("select count(*) from private.dispatch_recurring_bookings(now(), 7, false)").fetchone()
        conn.rollback()
    steps = []
    for notice in notices:
        if notice.startswith("dispatch step "):
            name, _, seconds = notice[len("dispatch step "):].rpartition(": ")
            steps.append((name, float(seconds.rstrip(" s"))))
    return steps


FLOOR_TABLE = "public.dispatch_floor"


def insert_floor(url: str) -> list[tuple[str, float]]:
    """One row per recurrence into a bare table: with its primary key only, then with the two exclusion constraints."""
    timings = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set jit = off")
        # The sessions table's own exclusion constraints, as they are defined.
        exclusions = [row[0] for row in conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = 'public.sessions'::regclass and contype = 'x' order by conname")]
        if len(exclusions) != 2:
            raise RuntimeError(f"expected the two no-overlap constraints on sessions, found {exclusions}")
        for label, constraints in (("primary key only", []),
                                   ("primary key and the two no-overlap constraints", exclusions)):
            conn.execute(f"drop table if exists {FLOOR_TABLE}")
            conn.execute(f"""create table {FLOOR_TABLE} (id uuid primary key, specialist_id uuid not null,
                             client_id uuid not null, starts_at timestamptz not null, ends_at timestamptz not null,
                             blocked_until timestamptz not null, status text not null default 'confirmed')""")
            for definition in constraints:
                conn.execute(f"alter table {FLOOR_TABLE} add {definition}")
            started = time.perf_counter()
            conn.execute(f"""insert into {FLOOR_TABLE} (id, specialist_id, client_id, starts_at, ends_at,
                                                        blocked_until)
                             select gen_random_uuid(), r.specialist_id, r.user_id, s.starts_at,
                                    s.starts_at + make_interval(mins => r.duration_minutes),
                                    s.starts_at + make_interval(mins => r.duration_minutes)
                             from public.recurring_bookings r,
                                  lateral (select (r.start_date + r.start_time) at time zone r.timezone as starts_at) s""")
            timings.append((label, time.perf_counter() - started))
        conn.execute(f"drop table {FLOOR_TABLE}")
        conn.execute("vacuum")
    return timings


# -- one size -------------------------------------------------------------------------------

def measure_size(cluster: LocalCluster, recurrences: int, *, breakdown: bool = False, floor: bool = False,
                 log: Callable[[str], None] = print) -> SizeResult:
    name = f"dispatch_{recurrences}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = cluster.url(name)
    jwt_secret = "bench-jwt-secret-" + uuid.uuid4().hex
    served = None
    try:
        migrate(url, log=lambda _line: None)
        started = time.perf_counter()
        counts = seed(url, recurrences, log=log)
        seed_seconds = time.perf_counter() - started
        log(f"  seeded {counts['recurrences']:,} recurring bookings over {counts['specialists']:,} specialists "
            f"and {counts['distinct_clients']:,} distinct clients in {seed_seconds:.1f} s")
        steps: list[tuple[str, float]] = []
        if breakdown:
            # On a copy: the measured dispatch below finds everything due, and no dead rows.
            with psycopg.connect(cluster.url(), autocommit=True) as admin:
                admin.execute(f'create database "{name}_copy" template "{name}"')
            try:
                steps = step_breakdown(cluster.url(f"{name}_copy"))
            finally:
                with psycopg.connect(cluster.url(), autocommit=True) as admin:
                    admin.execute(f'drop database if exists "{name}_copy" with (force)')
        floor_timings = insert_floor(url) if floor else []
        served = serve(url, jwt_secret)
        pid = worker_pid(served._process.pid)  # type: ignore[union-attr]
        dispatch(served.base_url, jwt_secret, {"dry_run": True, "horizon_days": 0})  # imports, pool, caches
        before = peak_memory_kib(pid)
        first = dispatch(served.base_url, jwt_secret)
        after = peak_memory_kib(pid)
        second = dispatch(served.base_url, jwt_secret)
        with psycopg.connect(url) as conn:
            sessions = conn.execute("select count(*) from public.sessions").fetchone()[0]
        return SizeResult(recurrences, seed_seconds, first, second, sessions, before, after, steps, floor_timings)
    finally:
        if served is not None:
            served.stop()
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def report(result: SizeResult, out: Callable[[str], None] = print) -> None:
    n = result.recurrences
    out(f"{n:,} due recurring bookings:")
    out(f"  dispatch: {result.first.count:,} sessions created, {result.first.errors} errors, "
        f"{result.first.seconds:.2f} s wall (one HTTP call, {result.first.body_bytes / 1e6:.1f} MB answer), "
        f"{n / result.first.seconds:,.0f} recurrences/s")
    out(f"  immediate second run: {result.second.count} created, {result.second.errors} errors, "
        f"{result.second.seconds:.3f} s")
    out(f"  function process peak memory (VmHWM): {result.peak_kib_after / 1024:.0f} MiB "
        f"(after start-up: {result.peak_kib_before / 1024:.0f} MiB)")
    if result.breakdown:
        total = sum(seconds for _name, seconds in result.breakdown)
        out(f"  SQL function steps ({total:.2f} s in all, measured on a copy of the data):")
        for name, seconds in result.breakdown:
            out(f"    {seconds:7.3f} s  {name}")
    if result.floor:
        out(f"  lower bound: the same {n:,} rows into a bare table (one INSERT ... SELECT):")
        for name, seconds in result.floor:
            out(f"    {seconds:7.3f} s  {name}")


def check(result: SizeResult) -> list[str]:
    problems = []
    if result.first.count != result.recurrences or result.first.errors:
        problems.append(f"expected {result.recurrences} sessions and no errors, got {result.first.count} "
                        f"and {result.first.errors} errors")
    if result.sessions != result.recurrences:
        problems.append(f"{result.sessions} sessions stored")
    if result.second.count or result.second.errors:
        problems.append("the second run created or reported something")
    return problems


# -- the command ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--small", action="store_true", help="a smoke run: 2,000 recurring bookings")
    group.add_argument("--large", action="store_true", help="100,000 then 1,000,000")
    group.add_argument("--sizes", help="comma-separated numbers of recurring bookings, e.g. 100000,300000")
    parser.add_argument("--breakdown", action="store_true", help="also time each step of the SQL function")
    parser.add_argument("--floor", action="store_true",
                        help="also time the same rows into a bare table, with and without the exclusion constraints")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = tuple(int(s.replace("_", "")) for s in args.sizes.split(","))
    else:
        sizes = SMALL_SIZES if args.small else LARGE_SIZES if args.large else DEFAULT_SIZES

    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="therapy-bench-pg-")), fast=True)
    problems: list[str] = []
    results: list[SizeResult] = []
    try:
        cluster.init()
        with open(cluster.datadir / "postgresql.conf", "a") as conf:
            conf.write(SERVER_SETTINGS)
        cluster.start()
        for size in sizes:
            print(f"size {size:,}:", flush=True)
            result = measure_size(cluster, size, breakdown=args.breakdown, floor=args.floor)
            report(result)
            results.append(result)
            problems += [f"{size:,}: {p}" for p in check(result)]
    finally:
        cluster.destroy()
    if len(results) > 1:
        base = results[0]
        for result in results[1:]:
            factor = result.recurrences / base.recurrences
            print(f"growth {base.recurrences:,} -> {result.recurrences:,} (x{factor:g}): dispatch time "
                  f"x{result.first.seconds / base.first.seconds:.2f}, peak memory "
                  f"x{result.peak_kib_after / base.peak_kib_after:.2f}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
