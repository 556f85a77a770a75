"""Recording links and expiry through the served functions, against the local Storage server.

    python -m tests.bench.recordings            # 16 concurrent callers, 2,000 links each; expiry of 20,000 recordings
    python -m tests.bench.recordings --small    # 4 callers, 25 links each; expiry of 400: a smoke run

Everything is started here and thrown away afterwards (tests.bench.stack): a PostgreSQL
cluster with every migration, the local Storage server of the tests (each file held in
memory), and all functions served in a gunicorn subprocess.

The data, set-based in SQL: one specialist per caller, 16 clients each, and per
specialist `recordings / callers` past sessions an hour apart, each with one recording
whose file is in the bucket. Caller i asks recording-url for specialist i's recordings
in turn, as the session's client and as the specialist: every call is a success path
(JWT, the read under the caller's row-level security, Storage's signing, the audit
row). Then every recording is made expired and one call of recording-expiry removes
them all (batches of 100 through Storage, rows marked and audited); it is timed as the
caller sees it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from tests.bench.booking_create import SEED_STEPS, client_uuid, specialist_uuid
from tests.bench.load import Answer, KeptAlive, Result, report, run_concurrently
from tests.bench.stack import served_stack
from tests.functions_fixtures import service_token, user_token
from tests.storage_fixtures import BUCKET
from tests.storage_server import FakeStorageServer


@dataclass(frozen=True)
class Scale:
    callers: int
    links_per_caller: int
    recordings: int
    clients_per_specialist: int = 16

    @property
    def per_specialist(self) -> int:
        return self.recordings // self.callers


FULL = Scale(callers=16, links_per_caller=2000, recordings=20_000)
SMALL = Scale(callers=4, links_per_caller=25, recordings=400, clients_per_specialist=4)

# Specialist i's session j, j + 1 hours before now (whole hours, so no two of one party overlap).
SESSIONS_AND_RECORDINGS = """
    with made as (
      insert into public.sessions (id, specialist_id, client_id, starts_at, ends_at)
      select md5('bench-rec-session-' || i || '-' || j)::uuid,
             md5('bench-s' || i)::uuid,
             md5('bench-c' || (i * %(clients_per_specialist)s + j %% %(clients_per_specialist)s))::uuid,
             date_trunc('hour', now()) - (j + 1) * interval '1 hour',
             date_trunc('hour', now()) - (j + 1) * interval '1 hour' + interval '50 minutes'
      from generate_series(0, %(specialists)s - 1) i cross join generate_series(0, %(per_specialist)s - 1) j
      returning id, starts_at)
    insert into public.meeting_recordings (id, booking_id, storage_path, file_format, duration_seconds, created_at)
    select md5('bench-rec-' || id)::uuid, id,
           'sessions/' || to_char(starts_at at time zone 'UTC', 'YYYY-MM') || '/' || id || '/recording.mp4',
           'mp4', 3000, now() - interval '2 days'
    from made
"""


def recording_uuid(i: int, j: int) -> uuid.UUID:
    session = uuid.UUID(hex=hashlib.md5(f"bench-rec-session-{i}-{j}".encode()).hexdigest())
    return uuid.UUID(hex=hashlib.md5(f"bench-rec-{session}".encode()).hexdigest())


def seed(url: str, scale: Scale, storage: FakeStorageServer) -> dict[str, int]:
    params = {"specialists": scale.callers, "clients": scale.callers * scale.clients_per_specialist,
              "clients_per_specialist": scale.clients_per_specialist, "per_specialist": scale.per_specialist}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        with conn.transaction():
            # Past sessions are history being loaded, not bookings: the booking rules stand aside.
            conn.execute("set local app.booking_rules = 'off'")
            for name, statement in SEED_STEPS:
                if name in ("users and profiles", "specialist roles"):
                    conn.execute(statement, params)
            conn.execute(SESSIONS_AND_RECORDINGS, params)
        conn.execute("vacuum analyze")
        for row in conn.execute("select storage_path from public.meeting_recordings"):
            storage.put(BUCKET, row["storage_path"])
        return conn.execute("select count(*) as recordings from public.meeting_recordings").fetchone()


class Caller:
    """Asks for links to specialist `index`'s recordings, as their client and as the specialist in turn."""

    def __init__(self, index: int, scale: Scale, base_url: str, jwt_secret: str):
        self.index = index
        self.scale = scale
        self.specialist_token = user_token(specialist_uuid(index), secret=jwt_secret)
        first = index * scale.clients_per_specialist
        self.client_tokens = [user_token(client_uuid(c), secret=jwt_secret)
                              for c in range(first, first + scale.clients_per_specialist)]
        self.http = KeptAlive(f"{base_url}/recording-url")

    def ask(self, n: int) -> Answer:
        j = n % self.scale.per_specialist
        token = self.specialist_token if n % 2 else self.client_tokens[j % self.scale.clients_per_specialist]
        return self.http.post_json({"recording_id": str(recording_uuid(self.index, j))}, token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 4 callers, 25 links each, 400 recordings")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads of the served functions")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL

    with served_stack(args.threads) as stack:
        url, served, storage = stack.database_url, stack.served, stack.storage
        assert storage is not None
        counts = seed(url, scale, storage)
        print(f"seeded {counts['recordings']} recordings of {scale.callers} specialists' past sessions, "
              f"their files in the local Storage")
        print(f"links: {scale.callers} concurrent callers, {scale.links_per_caller} each, "
              f"served with {args.threads} gunicorn threads")
        callers = [Caller(i, scale, served.base_url, stack.jwt_secret) for i in range(scale.callers)]
        result: Result = run_concurrently(callers, Caller.ask, lambda j, _elapsed: j < scale.links_per_caller)
        report(result, "links")
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            audited = conn.execute("select count(*) as n from public.audit_log "
                                   "where action = 'recording_link_issued'").fetchone()["n"]
            print(f"checked: {audited} links audited")
            conn.execute("update public.meeting_recordings set expires_at = now() - interval '1 hour'")
        expiry = KeptAlive(f"{served.base_url}/recording-expiry")
        started = time.perf_counter()
        latency_ms, status, text = expiry.post_json({}, service_token(secret=stack.jwt_secret))
        elapsed = time.perf_counter() - started
        removed = json.loads(text).get("removed") if status == 200 else None
        print(f"expiry: {removed} recordings removed and marked in {elapsed:.2f} s (HTTP {status}), "
              f"{len(storage.recorded('DELETE'))} Storage removal calls")
        with psycopg.connect(url, row_factory=dict_row) as conn:
            left = conn.execute("select count(*) filter (where deleted_at is null) as unmarked, "
                                "count(*) as rows from public.meeting_recordings").fetchone()
        print(f"checked: {left['rows']} rows kept, {left['unmarked']} unmarked, "
              f"{sum(storage.removals.values())} files removed once each: {set(storage.removals.values()) == {1}}")
        ok = (not result.failures and result.succeeded + result.warmed == scale.callers * scale.links_per_caller
              and audited == result.succeeded + result.warmed and removed == counts["recordings"]
              and left["unmarked"] == 0 and sum(storage.removals.values()) == counts["recordings"])
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
