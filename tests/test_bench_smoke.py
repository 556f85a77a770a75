"""The RLS read benchmark (tests/bench/rls_reads.py) at its smoke scale, so its seeding
and its queries cannot rot: the data is what the benchmark says it is, and every
read returns under RLS exactly what the owner's explicitly filtered read returns.
Timings are not checked here; run ``python -m tests.bench.rls_reads`` for those.
"""

from __future__ import annotations

import random
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.ops.migrate import migrate
from tests.bench import rls_reads as bench

SCALE = bench.SMALL


@pytest.fixture(scope="module")
def bench_url(pg_cluster):
    """A database of its own in the test cluster, migrated and seeded at the smoke scale."""
    name = f"bench_smoke_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = pg_cluster.url(name)
    try:
        migrate(url, log=lambda _line: None)
        bench.seed(url, SCALE, log=lambda _line: None)
        yield url
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def conn(bench_url):
    with psycopg.connect(bench_url, autocommit=True, row_factory=dict_row) as c:
        c.read_only = True
        yield c


def test_seed_writes_the_advertised_world(conn):
    counts = conn.execute(
        """
        select (select count(*) from public.profiles where role = 'specialist') as specialists,
               (select count(*) from public.profiles where role = 'client') as clients,
               (select count(*) from public.sessions) as sessions,
               (select count(*) from public.sessions where status = 'cancelled') as cancelled,
               (select count(*) from public.booking_cancellations) as cancellations,
               (select count(*) from public.booking_status_history) as history,
               (select count(*) from public.sessions where status = 'confirmed' and ends_at < now()) as past_confirmed,
               (select count(*) from public.session_notes) as notes,
               (select count(*) from public.sessions where starts_at > now()) as future
        """).fetchone()
    assert counts["specialists"] == SCALE.specialists
    assert counts["clients"] == SCALE.clients
    assert counts["sessions"] == SCALE.sessions
    assert counts["cancellations"] == counts["cancelled"] > 0, "every cancelled session has its cancellation"
    assert counts["history"] == counts["sessions"] + counts["cancelled"], "one history row per status"
    assert counts["notes"] == counts["past_confirmed"] > 0, "every past confirmed session has a note"
    assert 0.4 < counts["future"] / counts["sessions"] < 0.6, "sessions spread over past and future"


def test_seeded_sessions_never_overlap_for_a_specialist_or_a_client(conn):
    for party in ("specialist_id", "client_id"):
        overlaps = conn.execute(
            f"""
            select count(*) as n from (
              select ends_at, lead(starts_at) over (partition by {party} order by starts_at) as next_start
              from public.sessions where status = 'confirmed'
            ) s where next_start < ends_at
            """).fetchone()["n"]
        assert overlaps == 0, f"no two confirmed sessions of one {party.split('_')[0]} overlap"


def pairs():
    """(read under RLS, the owner's read of the same thing)."""
    owner = {(r.name, r.who): r for r in bench.READS if not r.under_rls}
    return [(r, owner[(r.name, r.who)]) for r in bench.READS if r.under_rls and (r.name, r.who) in owner]


@pytest.mark.parametrize(("rls_read", "owner_read"), pairs(),
                         ids=[f"{r.name}-{r.who}" for r, _ in pairs()])
def test_reads_under_rls_return_what_the_owner_reads_with_the_filter_written_out(conn, rls_read, owner_read):
    pick = bench.people(SCALE)[rls_read.who]
    rng = random.Random(7)
    seen_rows = 0
    for _ in range(5):
        person = pick(rng)
        under_rls = bench.call(conn, rls_read, person)
        as_owner = bench.call(conn, owner_read, person)
        assert [r["id"] for r in under_rls] == [r["id"] for r in as_owner], (
            f"{rls_read.name} for a {rls_read.who}: RLS and the owner's filtered read must agree")
        seen_rows += len(under_rls)
    assert seen_rows > 0, "the random callers have data to read"


def test_upcoming_sessions_under_rls_name_both_parties(conn):
    read = next(r for r in bench.READS if r.name == "upcoming sessions" and r.under_rls)
    rows = bench.call(conn, read, bench.specialist_uuid(3))
    assert len(rows) == 50
    assert all(r["specialist_name"] == "Specialist 3" and r["client_name"].startswith("Client ") for r in rows)


@pytest.mark.parametrize("who", ["specialist", "client"])
def test_policy_only_note_reads_return_only_the_callers_notes(conn, who):
    read = next(r for r in bench.READS if r.name == "notes, policy only" and r.who == who)
    person = bench.specialist_uuid(5) if who == "specialist" else bench.client_uuid(105)
    rows = bench.call(conn, read, person)
    assert rows, "the caller has notes"
    own_sessions = {r["id"] for r in conn.execute(
        "select id from public.sessions where specialist_id = %(me)s or client_id = %(me)s", {"me": person})}
    assert {r["booking_id"] for r in rows} <= own_sessions, "only notes on the caller's own sessions"


def test_measure_and_report_produce_the_table(conn):
    lines: list[str] = []
    measurements = [bench.measure(conn, read, SCALE, calls=3, rng=random.Random(1)) for read in bench.READS]
    bench.report(measurements, out=lines.append)
    assert len(lines) == 1 + len(bench.READS)
    assert all(len(m.latencies_ms) == 3 and m.percentile(95) > 0 for m in measurements)
    assert lines[0].split()[:2] == ["read", "caller"]


# -- the intake benchmark (tests/bench/intake.py) ---------------------------------------------------

def test_the_intake_benchmark_submits_reads_and_reencrypts_in_its_small_mode():
    """`python -m tests.bench.intake --small` end to end: its own cluster, calendar and server."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run([sys.executable, "-m", "tests.bench.intake", "--small"],
                         cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"^seeded 4 specialists, 64 clients, 1000 confirmed sessions$", out, re.M), out
    # 4 callers × 8 forms: one warm-up each, 28 measured
    assert re.search(r"^submissions: 28 succeeded, 0 failed$", out, re.M), out
    assert re.search(r"^reads: 28 succeeded, 0 failed$", out, re.M), out
    assert len(re.findall(r"^latency ms: p50 [\d.]+, p95 [\d.]+", out, re.M)) == 2, out
    assert re.search(r"^checked: 32 audit rows for 32 reads$", out, re.M), out
    assert re.search(r"^-- re-encryption: 968 more forms written under key version 1 \(1000 in all\)", out, re.M), out
    assert re.search(r"^re-encrypted: 1000 forms in \d+ batches of up to 1000, [\d.]+ s: [\d,]+ rows/s; "
                     r"left on older keys: 0, unreadable: 0$", out, re.M), out
    assert re.search(r"^checked: a sample of 200 forms decrypts with key version 2 alone$", out, re.M), out


# -- the notifications benchmark (tests/bench/notifications.py) at its smoke size -------------

def test_notifications_benchmark_sends_each_message_once_and_claims_by_index(pg_cluster):
    from tests.bench import notifications as mail_bench

    messages, stored = mail_bench.SMALL
    result = mail_bench.measure(pg_cluster, messages, stored, log=lambda _line: None)
    assert mail_bench.check(result) == []
    assert (result.messages, result.received, result.distinct_message_ids) == (messages,) * 3
    assert result.stored == stored and result.index_scan
    lines: list[str] = []
    mail_bench.report(result, out=lines.append)
    assert lines[0] == f"{messages:,} due messages:"
    assert lines[3].startswith(f"  claim of 100 among {stored:,} stored messages (1,000 due): ")
    assert any("Index Scan using email_outbox_due_idx" in line for line in lines)


def test_dispatch_cost_measures_the_same_dispatch_with_and_without_the_email_triggers(pg_cluster):
    from tests.bench import notifications as mail_bench

    lines: list[str] = []
    medians = mail_bench.dispatch_cost(pg_cluster, 200, rounds=1, log=lines.append)
    assert [label for label, _wall, _cpu in medians] == ["email triggers on", "email triggers off"]
    assert all(wall > 0 and cpu >= 0 for _label, wall, cpu in medians)
    assert [line.split(",")[:2] for line in lines[:2]] == [
        ["  email triggers on: 200 sessions", " 400 emails queued"],
        ["  email triggers off: 200 sessions", " 0 emails queued"]]
    assert any(line.startswith("  one INSERT of 200 sessions: Trigger sessions_queue_booking_emails: time=")
               for line in lines[2:])
