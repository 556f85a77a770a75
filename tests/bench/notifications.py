"""Email throughput and the claim query at scale, through the served notifications function.

    python -m tests.bench.notifications           # 10,000 due messages; the claim among 1,000,000 stored
    python -m tests.bench.notifications --small   # 200 due messages; 20,000 stored: a smoke run in seconds
    python -m tests.bench.notifications --dispatch-cost 100000   # what the email triggers add to a dispatch

Everything is started here and thrown away afterwards: a PostgreSQL cluster (fsync off),
a migrated database, the real SMTP server of the tests (aiosmtpd with STARTTLS and AUTH,
in this process) and every function served by shared.ops.serve in a gunicorn subprocess
with SMTP_URL pointing at it.

1. Seed: N / 2 confirmed sessions in one INSERT (N / 20 specialists, each with ten
   sessions an hour apart, each with its own client); the database's triggers queue a
   confirmation and a specialist's notice for each: N due messages.
2. Send: call the notifications function (service key, as pg_cron does) until the
   backlog is empty; wall time from the first call to the last answer, messages per
   second. Every message must arrive at the SMTP server exactly once (counted by
   Message-ID).
3. The claim at scale: the outbox is filled with sent messages up to M stored rows, plus
   1,000 due ones; after ANALYZE, ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim query
   (shared.notifications.outbox.CLAIM_QUERY, in a transaction rolled back) must show an
   index scan of email_outbox_due_idx, not a scan of the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg

from shared.notifications.outbox import CLAIM_QUERY, LEASE
from shared.ops.localpg import LocalCluster, free_port
from shared.ops.migrate import migrate
from tests.functions_fixtures import ServedFunctions, served_environment, service_token
from tests.smtp_server import SmtpTestServer

DEFAULT = (10_000, 1_000_000)
SMALL = (200, 20_000)
DUE_AMONG_STORED = 1_000
EMAIL_FROM = "Bench Practice <bookings@bench.test>"


@dataclass(frozen=True)
class Result:
    messages: int
    seed_seconds: float
    send_seconds: float
    calls: int
    sent: int
    received: int
    distinct_message_ids: int
    stored: int
    plan: list[str]
    claim_ms: float

    @property
    def per_second(self) -> float:
        return self.received / self.send_seconds if self.send_seconds else 0.0

    @property
    def index_scan(self) -> bool:
        text = "\n".join(self.plan)
        return "email_outbox_due_idx" in text and "Seq Scan on email_outbox" not in text


def seed(url: str, messages: int) -> float:
    """N / 2 sessions in one statement; the triggers queue N messages. Returns the seconds it took."""
    sessions = max(messages // 2, 1)
    specialists = max(sessions // 10, 1)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """insert into auth.users (id, email, raw_user_meta_data)
               select md5('mail-s' || i)::uuid, 'specialist' || i || '@bench.test',
                      jsonb_build_object('full_name', 'Specialist ' || i)
               from generate_series(0, %(s)s - 1) i
               union all
               select md5('mail-c' || c)::uuid, 'client' || c || '@bench.test',
                      jsonb_build_object('full_name', 'Client ' || c)
               from generate_series(0, %(n)s - 1) c""", {"s": specialists, "n": sessions})
        conn.execute("update public.profiles set role = 'specialist', timezone = 'Europe/London' "
                     "where id in (select md5('mail-s' || i)::uuid from generate_series(0, %s - 1) i)", [specialists])
        # Data for the sender, not bookings to check: the booking rules are off for this trusted writer.
        conn.execute("set app.booking_rules = 'off'")
        conn.execute(
            """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
               select md5('mail-s' || (c / 10))::uuid, md5('mail-c' || c)::uuid,
                      date_trunc('hour', now()) + make_interval(days => 3, hours => c %% 10),
                      date_trunc('hour', now()) + make_interval(days => 3, hours => c %% 10, mins => 50)
               from generate_series(0, %(n)s - 1) c""", {"n": sessions})
    return time.perf_counter() - started


def call_notifications(base_url: str, jwt_secret: str) -> dict:
    url = urllib.parse.urlsplit(f"{base_url}/notifications")
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    try:
        connection.request("POST", url.path, body=b"{}", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {service_token(secret=jwt_secret)}"})
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"notifications answered {answer.status}: {body[:300]!r}")
        return json.loads(body)
    finally:
        connection.close()


def backlog(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from private.email_outbox where status = 'pending'").fetchone()[0]


def fill_and_explain(url: str, stored: int) -> tuple[list[str], float]:
    """Sent messages up to `stored` rows plus DUE_AMONG_STORED due ones; the claim's plan and its time."""
    with psycopg.connect(url, autocommit=True) as conn:
        have = conn.execute("select count(*) from private.email_outbox").fetchone()[0]
        sent = max(stored - have - DUE_AMONG_STORED, 0)
        conn.execute(
            """insert into private.email_outbox (kind, session_id, recipient_id, for_starts_at, status, sent_at,
                                                 attempts, created_at, next_attempt_at)
               select 'booking_confirmed', gen_random_uuid(), gen_random_uuid(), now() - interval '1 day',
                      'sent', now() - interval '1 day', 1, now() - make_interval(secs => i), now()
               from generate_series(1, %(sent)s) i
               union all
               select 'booking_confirmed', gen_random_uuid(), gen_random_uuid(), now() + interval '1 day',
                      'pending', null, 0, now(), now() - make_interval(secs => i)
               from generate_series(1, %(due)s) i""", {"sent": sent, "due": DUE_AMONG_STORED})
        conn.execute("vacuum analyze private.email_outbox")
    with psycopg.connect(url) as conn:
        plan = [row[0] for row in conn.execute(
            "explain (analyze, buffers, costs off) " + CLAIM_QUERY, {"limit": 100, "lease": LEASE})]
        conn.rollback()
    executed = next((line for line in plan if line.startswith("Execution Time")), "Execution Time: 0 ms")
    return plan, float(executed.split(":")[1].split()[0])


def measure(cluster: LocalCluster, messages: int, stored: int, log: Callable[[str], None] = print) -> Result:
    name = f"notifications_{messages}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = cluster.url(name)
    jwt_secret = "bench-jwt-secret-" + uuid.uuid4().hex
    smtp = SmtpTestServer().start()
    served = None
    try:
        migrate(url, log=lambda _line: None, settings_environ={})
        seed_seconds = seed(url, messages)
        queued = backlog(url)
        log(f"  seeded {queued:,} due messages ({queued // 2:,} sessions) in {seed_seconds:.1f} s")
        port = free_port()
        served = ServedFunctions(port, served_environment(
            database_url=url, public_url=f"http://127.0.0.1:{port}/functions/v1", calendar_api_url="",
            service_account={}, jwt_secret=jwt_secret, link_secret="bench-link-secret-" + uuid.uuid4().hex,
            SMTP_URL=smtp.url, EMAIL_FROM=EMAIL_FROM, SSL_CERT_FILE=str(smtp.cert_file),
            GOOGLE_SERVICE_ACCOUNT_JSON="", GOOGLE_CALENDAR_API_URL="",
        ), threads=4).start()
        calls = sent = 0
        started = time.perf_counter()
        while True:
            answer = call_notifications(served.base_url, jwt_secret)
            calls += 1
            sent += answer["sent"]
            if answer["sent"] == 0 or backlog(url) == 0:
                break
        send_seconds = time.perf_counter() - started
        received = smtp.messages()
        ids = Counter(r.message_id for r in received)
        plan, claim_ms = fill_and_explain(url, stored)
        with psycopg.connect(url) as conn:
            total = conn.execute("select count(*) from private.email_outbox").fetchone()[0]
        return Result(messages=queued, seed_seconds=seed_seconds, send_seconds=send_seconds, calls=calls, sent=sent,
                      received=len(received), distinct_message_ids=len(ids), stored=total, plan=plan,
                      claim_ms=claim_ms)
    finally:
        if served is not None:
            served.stop()
        smtp.stop()
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def report(result: Result, out: Callable[[str], None] = print) -> None:
    out(f"{result.messages:,} due messages:")
    out(f"  sent: {result.received:,} received by the SMTP server in {result.send_seconds:.2f} s "
        f"({result.calls} call(s) of the served function), {result.per_second:,.0f} messages/s")
    out(f"  each once: {result.distinct_message_ids:,} distinct Message-IDs for {result.received:,} messages")
    out(f"  claim of 100 among {result.stored:,} stored messages ({DUE_AMONG_STORED:,} due): "
        f"{result.claim_ms:.3f} ms, {'index scan' if result.index_scan else 'NOT an index scan'}")
    for line in result.plan:
        out(f"    {line}")


def check(result: Result) -> list[str]:
    problems = []
    if not result.messages == result.sent == result.received == result.distinct_message_ids:
        problems.append(f"{result.messages} queued, {result.sent} sent, {result.received} received, "
                        f"{result.distinct_message_ids} distinct: every message must arrive exactly once")
    if not result.index_scan:
        problems.append("the claim query does not use email_outbox_due_idx")
    return problems


EMAIL_TRIGGERS = ("sessions_queue_booking_emails", "sessions_queue_change_emails")
REMINDER_INDEX = ("create index if not exists sessions_confirmed_starts_idx on public.sessions (starts_at) "
                  "where status = 'confirmed'")


def dispatch_cost(cluster: LocalCluster, recurrences: int, rounds: int = 3,
                  log: Callable[[str], None] = print) -> list[tuple[str, float]]:
    """What email adds to a dispatch: the dispatcher's SQL function over `recurrences` due recurring
    bookings (tests/bench/dispatch.py's data), with the email triggers and the reminders' index on
    sessions present and absent in turns, each run rolled back; the median of each. Alternating on a
    busy machine spreads the noise over both."""
    from tests.bench.dispatch import seed as seed_recurrences

    name = f"dispatch_cost_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = cluster.url(name)
    timings: dict[str, list[float]] = {"email triggers on": [], "email triggers off": []}
    cpu: dict[str, list[float]] = {"email triggers on": [], "email triggers off": []}
    try:
        migrate(url, log=lambda _line: None, settings_environ={})
        seed_recurrences(url, recurrences, log=lambda _line: None)
        with psycopg.connect(url) as conn:
            backend = conn.info.backend_pid
            for _ in range(rounds):
                for label, state in (("email triggers on", "enable"), ("email triggers off", "disable")):
                    for trigger in EMAIL_TRIGGERS:
                        conn.execute(f"alter table public.sessions {state} trigger {trigger}")
                    # The reminders' index on sessions is part of the cost (sessions is empty here: cheap).
                    conn.execute(REMINDER_INDEX if state == "enable"
                                 else "drop index if exists public.sessions_confirmed_starts_idx")
                    cpu_before = backend_cpu_seconds(backend)
                    started = time.perf_counter()
                    created = conn.execute(
                        "select count(*) from private.dispatch_recurring_bookings(now(), 7, false) "
                        "where outcome = 'created'").fetchone()[0]
                    timings[label].append(time.perf_counter() - started)
                    cpu[label].append(backend_cpu_seconds(backend) - cpu_before)
                    queued = conn.execute("select count(*) from private.email_outbox").fetchone()[0]
                    conn.rollback()
                    log(f"  {label}: {created:,} sessions, {queued:,} emails queued, {timings[label][-1]:.2f} s "
                        f"wall, {cpu[label][-1]:.2f} s CPU")
            for trigger in EMAIL_TRIGGERS:
                conn.execute(f"alter table public.sessions enable trigger {trigger}")
            conn.execute(REMINDER_INDEX)
            conn.commit()
            # The same sessions in one plain INSERT: EXPLAIN ANALYZE times each trigger on its own line.
            # As a bulk writer, like the dispatcher (one advisory lock per row would exhaust the lock table).
            conn.execute("select set_config('app.bulk_session_insert', 'on', true), "
                         "set_config('app.booking_rules', 'off', true)")
            plan = [row[0] for row in conn.execute(
                """explain (analyze, costs off)
                   insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
                   select specialist_id, user_id, (start_date + start_time) at time zone timezone,
                          (start_date + start_time) at time zone timezone + make_interval(mins => duration_minutes)
                   from public.recurring_bookings""")]
            conn.rollback()
            for line in plan:
                if line.startswith(("Trigger", "Execution Time")):
                    log(f"  one INSERT of {recurrences:,} sessions: {line}")
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    return [(label, median(timings[label]), median(cpu[label])) for label in timings]


def backend_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a PostgreSQL backend on this machine: what the work cost, whatever
    else the machine was doing (wall time on a shared machine mostly measures the neighbours)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a smoke run: 200 due messages, 20,000 stored")
    parser.add_argument("--dispatch-cost", type=int, metavar="N",
                        help="instead: what the email triggers add to a dispatch of N due recurring bookings")
    parser.add_argument("--rounds", type=int, default=3, help="with --dispatch-cost: dispatches with and without")
    args = parser.parse_args(argv)
    if args.dispatch_cost:
        cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="therapy-bench-pg-")), fast=True)
        try:
            cluster.init()
            cluster.start()
            medians = dispatch_cost(cluster, args.dispatch_cost, rounds=args.rounds)
        finally:
            cluster.destroy()
        (_, on, on_cpu), (_, off, off_cpu) = medians
        print(f"dispatch of {args.dispatch_cost:,} due recurring bookings (SQL function, median of {args.rounds}):")
        print(f"  wall: {on:.2f} s with the email triggers and index, {off:.2f} s without: "
              f"{on - off:+.2f} s ({(on - off) / off:+.1%})")
        print(f"  backend CPU: {on_cpu:.2f} s with, {off_cpu:.2f} s without: "
              f"{on_cpu - off_cpu:+.2f} s ({(on_cpu - off_cpu) / off_cpu:+.1%})" if off_cpu else
              "  backend CPU: not readable here (/proc)")
        return 0
    messages, stored = SMALL if args.small else DEFAULT
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="therapy-bench-pg-")), fast=True)
    try:
        cluster.init()
        cluster.start()
        result = measure(cluster, messages, stored)
    finally:
        cluster.destroy()
    report(result)
    problems = check(result)
    for problem in problems:
        print(f"PROBLEM {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
