"""Rescheduling against booking, in one run: concurrent callers booking through the served
booking-create, then moving those sessions through booking-reschedule.

    python -m tests.bench.booking_reschedule                 # 16 concurrent callers, 20 s of each
    python -m tests.bench.booking_reschedule --seconds 10    # shorter
    python -m tests.bench.booking_reschedule --small         # 4 callers, 40 of each: a smoke run

Everything is started here and thrown away afterwards (tests.bench.stack): a PostgreSQL
cluster with every migration, the local Calendar API server (the real Google client
talks to it), all functions served by shared.ops.serve in a gunicorn subprocess.

The data is booking_create's (N specialists in UTC with 30-minute sessions 06:00–22:00
every day, 64 clients each). Phase 1 is that benchmark: worker i books specialist i's
free half-hours from two days ahead. Phase 2, in the same stack: worker i moves the
sessions it booked, in turn, each by its own client, to specialist i's next free
half-hours further on; so every move is a real success path (the rules with the
session's own slot ignored, the audit row, the queued emails, the calendar patch) and
no two workers contend for a slot. Both phases warm up once per worker, unmeasured.
The run ends by checking that every session has exactly one event, at its time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg.rows import dict_row

from tests.bench import booking_create
from tests.bench.load import Answer, KeptAlive, Result, percentile, report, run_concurrently
from tests.bench.stack import served_stack
from tests.calendar_server import FakeCalendarServer

P95_TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Scale:
    specialists: int  # = concurrent callers
    seconds: float | None = 20.0  # of each phase
    calls: int | None = None  # measured calls of each phase instead

    def booking_scale(self) -> booking_create.Scale:
        return booking_create.Scale(self.specialists, 64 if self.calls is None else 16, self.seconds, self.calls)


FULL = Scale(specialists=16)
SMALL = Scale(specialists=4, seconds=None, calls=40)


class Booker(booking_create.Worker):
    """booking_create's worker, keeping what it booked (and by whom) for the moves."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.booked: list[tuple[str, str]] = []  # (session id, the client's token)

    def book(self, j: int) -> Answer:
        token = self.tokens[j % len(self.tokens)]
        ms, status, text = super().book(j)
        if status == 200:
            self.booked.append((json.loads(text)["session_id"], token))
        return ms, status, text


class Mover:
    """One concurrent caller of phase 2: moves its booker's sessions, in turn, to the next free slots."""

    def __init__(self, booker: Booker, base_url: str):
        self.booker = booker
        self.http = KeptAlive(f"{base_url}/booking-reschedule")

    def move(self, j: int) -> Answer:
        session_id, token = self.booker.booked[j % len(self.booker.booked)]
        starts_at = next(self.booker.slots)  # past every slot booked or moved to so far
        return self.http.post_json({"booking_id": session_id, "starts_at": starts_at.isoformat(),
                                    "reason": "benchmark"}, token)


def run_phase(callers: list, call, scale: Scale) -> Result:
    if scale.calls is not None:
        tickets = itertools.count()
        return run_concurrently(callers, call, lambda _j, _elapsed: next(tickets) < scale.calls)
    return run_concurrently(callers, call, lambda _j, elapsed: elapsed < scale.seconds)


def check(url: str, calendar: FakeCalendarServer, out=print) -> bool:
    """Every confirmed session has exactly one event, with its id and at its (moved) times."""
    with psycopg.connect(url, row_factory=dict_row) as conn:
        sessions = {r["google_calendar_event_id"]: (r["starts_at"], r["ends_at"]) for r in conn.execute(
            "select google_calendar_event_id, starts_at, ends_at from public.sessions where status = 'confirmed'")}
        moves = conn.execute("select count(*) as n from public.audit_log where action = 'session_moved'"
                             ).fetchone()["n"]
        pending = conn.execute("select count(*) as n from private.calendar_patches where completed_at is null"
                               ).fetchone()["n"]
    events = {event_id: (datetime.fromisoformat(e["start"]["dateTime"]), datetime.fromisoformat(e["end"]["dateTime"]))
              for event_id, e in calendar.events("primary").items()}
    wrong = sum(1 for event_id, times in sessions.items() if events.get(event_id) != times)
    out(f"checked: {len(sessions)} confirmed sessions, {len(events)} calendar events, {moves} moves audited, "
        f"{wrong} events not at their session's time, {pending} calendar patches pending")
    return set(sessions) == set(events) and wrong == 0 and pending == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 4 callers, 40 calls of each kind")
    parser.add_argument("--seconds", type=float, help="how long each phase runs (default 20)")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads of the served functions")
    args = parser.parse_args(argv)
    scale = SMALL if args.small else FULL
    if args.seconds:
        scale = Scale(scale.specialists, args.seconds, None)

    with served_stack(args.threads) as stack:
        url, served, jwt_secret = stack.database_url, stack.served, stack.jwt_secret
        booking_scale = scale.booking_scale()
        counts = booking_create.seed(url, booking_scale)
        print(f"seeded {counts['specialists']} specialists, {counts['clients']} clients")
        amount = f"{scale.calls} calls" if scale.calls is not None else f"{scale.seconds:g} s"
        print(f"{scale.specialists} concurrent callers, one specialist each, {amount} per phase, "
              f"served with {args.threads} gunicorn threads")
        now = datetime.now(timezone.utc)
        bookers = [Booker(i, booking_scale, served.base_url, jwt_secret, now) for i in range(scale.specialists)]
        print("-- booking-create")
        created = run_phase(bookers, Booker.book, scale)
        report(created, "bookings")
        print("-- booking-reschedule")
        moved = run_phase([Mover(b, served.base_url) for b in bookers], Mover.move, scale)
        report(moved, "reschedules")
        create_p95, move_p95 = percentile(created.latencies_ms, 95), percentile(moved.latencies_ms, 95)
        ratio = move_p95 / create_p95
        print(f"p95 ratio reschedule/create: {ratio:.2f} (target <= {P95_TARGET_RATIO})")
        consistent = check(url, stack.calendar)
        ok = not created.failures and not moved.failures and consistent
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
