"""Session analytics (sql/0061_session_analytics.sql) on the RLS benchmark's data.

    python -m tests.bench.analytics            # 10,000 specialists, 200,000 clients, 2,000,000 sessions
    python -m tests.bench.analytics --small    # 100 / 2,000 / 20,000: a smoke run in seconds
    DATABASE_URL=… python -m tests.bench.analytics --no-seed   # a database tests.bench.rls_reads seeded

The data is tests/bench/rls_reads.py's (its seed, unchanged: one session a day per
specialist for 200 days around today, one slot in 17 cancelled by the client two days
ahead), plus attendance on the past confirmed sessions, written set-based as an
import would (one in 10 a no-show, one in 20 unrecorded, the rest attended).

Measured, each call one PostgREST request (BEGIN READ ONLY; role and JWT claims; the
RPC; COMMIT):
  - a specialist's year: session_analytics over 12 months, as a random specialist
    (12 rows), target p95 < 50 ms;
  - one page of the admin's month: as an admin, one month, 1,000 specialists;
  - the admin's month over all specialists: every page of it (10 requests at
    10,000 specialists, PostgREST's 1,000-row limit), timed as a whole, target
    p95 < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import date, timedelta

import psycopg
from psycopg.rows import dict_row

from tests.bench import rls_reads

ATTENDANCE = """
    update public.sessions s
       set attendance = case when abs(hashtext(s.id::text)) %% 10 = 0 then 'no_show' else 'attended' end,
           attendance_recorded_at = s.ends_at + interval '1 hour',
           attendance_recorded_by = s.specialist_id
     where s.status = 'confirmed' and s.ends_at < now() and abs(hashtext(s.id::text)) %% 20 <> 1
       and abs(hashtext(s.specialist_id::text)) %% %(parts)s = %(part)s
"""


def seed_attendance(url: str, log=print) -> int:
    """Attendance of past sessions, as an import: with the triggers off (replica), since
    most of them ended more than 7 days ago, when attendance is final."""
    started = time.perf_counter()
    step = rls_reads.Step("attendance", ["set local session_replication_role = replica", ATTENDANCE], parallel=True)
    parts = rls_reads.WORKERS
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(parts) as pool:
        rows = sum(pool.map(lambda part: rls_reads.run_step(url, step, {}, part, parts), range(parts)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum (analyze) public.sessions")
    log(f"  attendance: {rows:,} rows written in {time.perf_counter() - started:.1f} s")
    return rows


def request(conn: psycopg.Connection, person: uuid.UUID, from_date: date, to_date: date,
            after: uuid.UUID | None = None) -> list[dict]:
    with conn.transaction():
        conn.execute("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                     [rls_reads.claims_for(person)])
        return conn.execute("select * from public.session_analytics(%s, %s, %s)", [from_date, to_date, after]).fetchall()


def admin_walk(conn, admin: uuid.UUID, from_date: date, to_date: date, months: int = 1) -> tuple[int, int]:
    """Every page of the admin's rows, as a frontend pages them (the next page after the last
    row's specialist, until a page is short); returns (rows, requests)."""
    full_page = (1000 // months) * months
    rows, requests, after = 0, 0, None
    while True:
        page = request(conn, admin, from_date, to_date, after)
        requests += 1
        rows += len(page)
        if len(page) < full_page:
            return rows, requests
        after = page[-1]["specialist_id"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def timed(fn, calls: int, warm: int = 3) -> tuple[list[float], list]:
    for _ in range(warm):
        fn()
    latencies, results = [], []
    for _ in range(calls):
        started = time.perf_counter()
        results.append(fn())
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, results


def run(url: str, scale: rls_reads.Scale, calls: int, walks: int, out=print) -> dict[str, list[float]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        admin = conn.execute("select id from public.profiles where role = 'admin' limit 1").fetchone()
        if admin is None:
            admin_id = uuid.uuid4()
            conn.execute("insert into auth.users (id, email, raw_user_meta_data) values (%s, %s, %s)",
                         [admin_id, "admin@bench.test", json.dumps({"full_name": "Bench Admin"})])
            conn.execute("update public.profiles set role = 'admin' where id = %s", [admin_id])
        else:
            admin_id = admin["id"]
    today = date.today()
    year_from = (today.replace(day=1) - timedelta(days=180)).replace(day=1)
    year_to = date(year_from.year + 1, year_from.month, 1) - timedelta(days=1)
    month_from = (today.replace(day=1) - timedelta(days=1)).replace(day=1)  # last month: all sessions ended
    month_to = today.replace(day=1) - timedelta(days=1)
    rng = random.Random(20261202)
    results: dict[str, list[float]] = {}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.read_only = True
        year, rows = timed(lambda: request(conn, rls_reads.specialist_uuid(rng.randrange(scale.specialists)),
                                           year_from, year_to), calls)
        assert all(len(r) == 12 for r in rows), "a specialist's year is 12 rows"
        results["specialist's year (12 rows)"] = year
        page, rows = timed(lambda: request(conn, admin_id, month_from, month_to), max(5, walks * 2))
        results[f"admin's month, first page ({len(rows[0]):,} rows)"] = page
        walk, rows = timed(lambda: admin_walk(conn, admin_id, month_from, month_to), walks, warm=1)
        assert all(r[0] == scale.specialists for r in rows), "one row per specialist"
        results[f"admin's month, all pages ({rows[0][0]:,} rows, requests: {rows[0][1]})"] = walk
    out(f"\nyear {year_from} to {year_to}; month {month_from} to {month_to}; times are whole requests")
    out(f"{'read':<52} {'calls':>6} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    for name, latencies in results.items():
        out(f"{name:<52} {len(latencies):>6} {percentile(latencies, 50):>9.1f} {percentile(latencies, 95):>9.1f}"
            f" {max(latencies):>9.1f}")
    out(f"(mean of the specialist's year: {statistics.mean(year):.1f} ms)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 100 specialists, 20,000 sessions")
    parser.add_argument("--calls", type=int, default=200, help="calls for a specialist's year (default 200)")
    parser.add_argument("--walks", type=int, default=20, help="walks over the admin's pages (default 20)")
    parser.add_argument("--no-seed", action="store_true", help="with DATABASE_URL: a database already seeded")
    args = parser.parse_args(argv)
    scale = rls_reads.SMALL if args.small else rls_reads.FULL

    url = os.environ.get("DATABASE_URL")
    cluster = None
    try:
        if not url:
            from shared.ops.migrate import migrate

            cluster = rls_reads.throwaway_cluster()
            url = cluster.url()
            migrate(url, log=lambda _line: None)
        print(f"scale: {scale.specialists:,} specialists, {scale.clients:,} clients, {scale.sessions:,} sessions")
        if not (args.no_seed and cluster is None):
            started = time.perf_counter()
            rls_reads.seed(url, scale)
            seed_attendance(url)
            print(f"seeded in {time.perf_counter() - started:.0f} s")
        run(url, scale, args.calls, args.walks)
    finally:
        if cluster is not None:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
