"""What PostgREST adds to a read: a specialist's ``upcoming_sessions`` through three paths.

    python -m tests.bench.postgrest_reads            # 1,000 specialists, 200,000 sessions, 1,000 calls a path
    python -m tests.bench.postgrest_reads --small    # the smoke scale of tests.bench.rls_reads, 50 calls

- emulated: what the access tests do: one psycopg connection, BEGIN READ ONLY,
  set_config('role', 'authenticated', true) and the JWT claims, the query, COMMIT;
- PostgREST: ``GET /upcoming_sessions`` straight to PostgREST 12 (the JWT verified,
  the same transaction made by PostgREST, the rows as JSON), on a kept-alive connection;
- front door: ``GET /rest/v1/upcoming_sessions`` on the served functions' port, which
  forwards to PostgREST (what ``SUPABASE_URL`` reaches locally).

One caller at a time, a fresh random specialist per call, every path after a warm-up of
50 calls; each call's answer is checked to be that specialist's rows. The data is
tests.bench.rls_reads' (sessions spread over time, each specialist about 100 upcoming
ones, of which the view returns all); a throwaway cluster unless DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import psycopg

from shared.ops.localpg import LocalCluster, free_port
from shared.ops.migrate import migrate
from shared.ops.postgrest import Postgrest, authenticator_uri
from tests.bench import rls_reads
from tests.bench.load import percentile
from tests.functions_fixtures import ServedFunctions, served_environment

QUERY = "select * from public.upcoming_sessions"
SECRET = "bench-postgrest-jwt-secret-" + uuid.uuid4().hex
WARM_UP = 50


def token(user_id: uuid.UUID) -> str:
    now = int(time.time())
    return jwt.encode({"sub": str(user_id), "role": "authenticated", "aud": "authenticated",
                       "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


def emulated(url: str) -> Callable[[uuid.UUID], int]:
    conn = psycopg.connect(url)

    def call(user_id: uuid.UUID) -> int:
        claims = json.dumps({"sub": str(user_id), "role": "authenticated", "aud": "authenticated"})
        with conn.transaction():
            conn.execute("set transaction read only")
            conn.execute("select set_config('role', 'authenticated', true), "
                         "set_config('request.jwt.claims', %s, true)", [claims])
            return len(conn.execute(QUERY).fetchall())
    return call


def over_http(port: int, path: str) -> Callable[[uuid.UUID], int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(user_id: uuid.UUID) -> int:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token(user_id)}",
                                                 "apikey": "unused-locally", "Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        return len(json.loads(body))
    return call


def measure(call: Callable[[uuid.UUID], int], specialists: list[uuid.UUID], calls: int,
            expected: Callable[[uuid.UUID], int]) -> list[float]:
    rng = random.Random(7)
    for _ in range(WARM_UP):
        call(rng.choice(specialists))
    latencies = []
    for _ in range(calls):
        who = rng.choice(specialists)
        started = time.perf_counter()
        rows = call(who)
        latencies.append((time.perf_counter() - started) * 1000)
        if rows != expected(who):
            raise RuntimeError(f"{who}: {rows} rows, expected {expected(who)}")
    return latencies


def run(url: str, scale: rls_reads.Scale, out=print) -> dict[str, list[float]]:
    specialists = [rls_reads.specialist_uuid(i) for i in range(scale.specialists)]
    with psycopg.connect(url) as conn:
        counts = dict(conn.execute(
            "select specialist_id, count(*) from public.sessions where status = 'confirmed' and starts_at > now() "
            "group by specialist_id").fetchall())
    expected = lambda who: counts.get(who, 0)  # noqa: E731
    with Postgrest(authenticator_uri(url), SECRET) as postgrest:
        port = free_port()
        environment = served_environment(
            database_url=url, public_url=f"http://127.0.0.1:{port}/functions/v1",
            calendar_api_url="http://127.0.0.1:9/calendar/v3/", service_account={}, jwt_secret=SECRET,
            POSTGREST_URL=postgrest.url)
        environment.pop("GOOGLE_SERVICE_ACCOUNT_JSON")
        with ServedFunctions(port, environment):
            paths = {
                "emulated (psycopg, set_config)": emulated(url),
                "PostgREST": over_http(postgrest.port, "/upcoming_sessions"),
                "front door (/rest/v1)": over_http(port, "/rest/v1/upcoming_sessions"),
            }
            results = {name: measure(call, specialists, scale.calls, expected) for name, call in paths.items()}
    base = percentile(results["emulated (psycopg, set_config)"], 50)
    out(f"upcoming_sessions as a random specialist, {scale.calls} calls a path, one caller at a time "
        f"(about {sum(counts.values()) // max(len(counts), 1)} rows a read)")
    out(f"{'path':<34} {'p50 ms':>8} {'p95 ms':>8} {'p50 over emulated':>18}")
    for name, ms in results.items():
        out(f"{name:<34} {percentile(ms, 50):>8.2f} {percentile(ms, 95):>8.2f} "
            f"{percentile(ms, 50) - base:>+17.2f}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the smoke scale: 100 specialists, 50 calls")
    args = parser.parse_args(argv)
    scale = rls_reads.SMALL if args.small else rls_reads.Scale(specialists=1000)
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="therapy-bench-pg-")), fast=True)
    try:
        cluster.init()
        cluster.start()
        url = cluster.url()
        migrate(url, log=lambda _line: None)
        print(f"seeding {scale.specialists:,} specialists, {scale.sessions:,} sessions", file=sys.stderr)
        rls_reads.seed(url, scale, log=lambda line: print(line, file=sys.stderr))
        run(url, scale)
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
