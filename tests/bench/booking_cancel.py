"""Cancellation throughput: concurrent callers cancelling through the served booking-cancel.

    python -m tests.bench.booking_cancel                          # 16 concurrent callers, 250 sessions each
    python -m tests.bench.booking_cancel --sessions-per-caller 50  # shorter
    python -m tests.bench.booking_cancel --small                  # 4 callers, 16 sessions each: a smoke run

Everything is started here and thrown away afterwards, as in tests.bench.booking_create
(whose seeding and helpers this reuses): a PostgreSQL cluster (shared.ops.localpg, fsync
off) with every migration, the local Calendar API server of the tests, and all
functions served by shared.ops.serve in a gunicorn subprocess.

The data, set-based in SQL: N specialists, 16 clients each, and per specialist M
confirmed sessions an hour apart from two days ahead, each with its event on the
calendar server. Caller i cancels only specialist i's sessions, in turn as the
session's client and as the specialist, so no two callers contend for a session and
every call is a real success path (authorization, locks, cancellation, history and
audit rows, the calendar deletion after the commit). Each caller's first cancellation
is a warm-up (connections, token, caches) and is not measured. Latency is the whole
HTTP call as the caller sees it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from dataclasses import dataclass

import psycopg
from psycopg.rows import dict_row

from tests.bench.booking_create import SEED_STEPS, client_uuid, specialist_uuid
from tests.bench.load import Answer, KeptAlive, Result, report, run_concurrently
from tests.bench.stack import served_stack
from tests.calendar_server import FakeCalendarServer
from tests.functions_fixtures import user_token

SESSION_MINUTES = 50
CALENDAR_ID = "primary"  # the bench specialists have no google_calendar_id of their own


@dataclass(frozen=True)
class Scale:
    callers: int  # = specialists: one caller per specialist
    sessions_per_caller: int
    clients_per_specialist: int = 16

    @property
    def clients(self) -> int:
        return self.callers * self.clients_per_specialist

    @property
    def sessions(self) -> int:
        return self.callers * self.sessions_per_caller


FULL = Scale(callers=16, sessions_per_caller=250)
SMALL = Scale(callers=4, sessions_per_caller=16, clients_per_specialist=4)

# Specialist i's session j: with client i * clients_per_specialist + j % clients_per_specialist,
# j hours after two days from now; the event id is the session id in hex, as booking-create makes it.
SESSIONS_STEP = """
    insert into public.sessions (id, specialist_id, client_id, starts_at, ends_at, google_calendar_event_id,
                                 price, currency)
    select md5('bench-session-' || i || '-' || j)::uuid,
           md5('bench-s' || i)::uuid,
           md5('bench-c' || (i * %(clients_per_specialist)s + j %% %(clients_per_specialist)s))::uuid,
           date_trunc('hour', now()) + interval '2 days' + j * interval '1 hour',
           date_trunc('hour', now()) + interval '2 days' + j * interval '1 hour'
             + make_interval(mins => %(minutes)s),
           replace(md5('bench-session-' || i || '-' || j)::uuid::text, '-', ''),
           80, 'EUR'
    from generate_series(0, %(specialists)s - 1) i cross join generate_series(0, %(sessions_per_caller)s - 1) j
"""


def session_uuid(i: int, j: int) -> uuid.UUID:
    return uuid.UUID(hex=hashlib.md5(f"bench-session-{i}-{j}".encode()).hexdigest())


def seed(url: str, scale: Scale, calendar: FakeCalendarServer) -> dict[str, int]:
    params = {"specialists": scale.callers, "clients": scale.clients, "sessions_per_caller": scale.sessions_per_caller,
              "clients_per_specialist": scale.clients_per_specialist, "minutes": SESSION_MINUTES}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        with conn.transaction():
            for name, statement in SEED_STEPS:
                if name in ("users and profiles", "specialist roles"):
                    conn.execute(statement, params)
            # The sessions are set up as an operator imports them: the booking rules are off
            # for this transaction (the specialists here have rates but no weekly hours).
            conn.execute("set local app.booking_rules = 'off'")
            conn.execute(SESSIONS_STEP, params)
        conn.execute("vacuum analyze")
        for row in conn.execute("select google_calendar_event_id as id, starts_at, ends_at from public.sessions"):
            calendar.put_event(CALENDAR_ID, {"id": row["id"], "start": {"dateTime": row["starts_at"].isoformat()},
                                             "end": {"dateTime": row["ends_at"].isoformat()}})
        counts = conn.execute(
            """select (select count(*) from public.profiles where role = 'specialist') as specialists,
                      (select count(*) from public.profiles where role = 'client') as clients,
                      (select count(*) from public.sessions where status = 'confirmed') as sessions"""
        ).fetchone()
    counts["events"] = len(calendar.events(CALENDAR_ID))
    return counts


# -- cancelling -------------------------------------------------------------------------------

class Caller:
    """One concurrent caller: cancels specialist `index`'s sessions, as client and specialist in turn."""

    def __init__(self, index: int, scale: Scale, base_url: str, jwt_secret: str):
        self.index = index
        self.scale = scale
        self.specialist_token = user_token(specialist_uuid(index), secret=jwt_secret)
        first = index * scale.clients_per_specialist
        self.client_tokens = [user_token(client_uuid(c), secret=jwt_secret)
                              for c in range(first, first + scale.clients_per_specialist)]
        self.http = KeptAlive(f"{base_url}/booking-cancel")

    def cancel(self, j: int) -> Answer:
        """Cancels session j."""
        token = self.specialist_token if j % 2 else self.client_tokens[j % self.scale.clients_per_specialist]
        body = {"booking_id": str(session_uuid(self.index, j)), "reason": f"Benchmark cancellation {j}"}
        return self.http.post_json(body, token)


def cancel_concurrently(scale: Scale, base_url: str, jwt_secret: str) -> Result:
    callers = [Caller(i, scale, base_url, jwt_secret) for i in range(scale.callers)]
    return run_concurrently(callers, Caller.cancel, lambda j, _elapsed: j < scale.sessions_per_caller)


def check(url: str, calendar: FakeCalendarServer, out=print) -> dict[str, int]:
    """Every session cancelled once, with its cancellation row and its event deleted."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        counts = conn.execute(
            """select (select count(*) from public.sessions where status = 'cancelled') as cancelled,
                      (select count(*) from public.booking_cancellations) as cancellations,
                      (select count(*) from private.calendar_deletions where completed_at is not null) as deletions
            """).fetchone()
    counts["events_left"] = len(calendar.events(CALENDAR_ID))
    out(f"checked: {counts['cancelled']} cancelled sessions, {counts['cancellations']} cancellation rows, "
        f"{counts['deletions']} calendar deletions done, {counts['events_left']} events left")
    return counts


# -- the command ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 4 callers, 16 sessions each")
    parser.add_argument("--callers", type=int, help="concurrent callers = specialists (default 16)")
    parser.add_argument("--sessions-per-caller", type=int, help="sessions each caller cancels (default 250)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads of the served functions")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    scale = Scale(args.callers or scale.callers, args.sessions_per_caller or scale.sessions_per_caller,
                  scale.clients_per_specialist)

    with served_stack(args.threads) as stack:
        url, calendar, served, jwt_secret = stack.database_url, stack.calendar, stack.served, stack.jwt_secret
        counts = seed(url, scale, calendar)
        print(f"seeded {counts['specialists']} specialists, {counts['clients']} clients, "
              f"{counts['sessions']} confirmed sessions with their events")
        print(f"cancelling: {scale.callers} concurrent callers, {scale.sessions_per_caller} sessions each, "
              f"served with {args.threads} gunicorn threads")
        result = cancel_concurrently(scale, served.base_url, jwt_secret)
        report(result, "cancellations")
        checked = check(url, calendar)
        ok = (not result.failures and result.succeeded + result.warmed == scale.sessions
              and checked["cancelled"] == checked["cancellations"] == checked["deletions"] == scale.sessions
              and checked["events_left"] == 0)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
