"""The analytics benchmark (tests/bench/analytics.py) at its smoke scale, so its seeding
and its calls cannot rot. Timings are not checked here; run
``python -m tests.bench.analytics`` for those.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.ops.migrate import migrate
from tests.bench import analytics, rls_reads


@pytest.fixture(scope="module")
def bench_url(pg_cluster):
    name = f"analytics_smoke_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = pg_cluster.url(name)
    try:
        migrate(url, log=lambda _line: None)
        rls_reads.seed(url, rls_reads.SMALL, log=lambda _line: None)
        analytics.seed_attendance(url, log=lambda _line: None)
        yield url
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


def test_the_benchmark_runs_and_reports_each_read(bench_url):
    lines: list[str] = []
    results = analytics.run(bench_url, rls_reads.SMALL, calls=3, walks=1, out=lines.append)
    assert list(results) == ["specialist's year (12 rows)", "admin's month, first page (100 rows)",
                             "admin's month, all pages (100 rows, requests: 1)"]
    assert all(len(latencies) > 0 for latencies in results.values())
    assert any(line.startswith("specialist's year (12 rows)") for line in lines)


def test_seeded_attendance_and_cancellations_are_what_the_benchmark_says(bench_url):
    with psycopg.connect(bench_url, row_factory=dict_row) as conn:
        row = conn.execute(
            """select count(*) filter (where attendance is not null and ends_at >= now()) as future_recorded,
                      count(*) filter (where status = 'confirmed' and ends_at < now()) as past,
                      count(*) filter (where attendance is not null) as recorded,
                      (select count(*) from public.booking_cancellations where cancelled_by_party = 'client') as by_client,
                      (select count(*) from public.booking_cancellations) as cancellations
               from public.sessions""").fetchone()
    assert row["future_recorded"] == 0
    assert 0.9 * row["past"] < row["recorded"] < row["past"], "one in 20 past sessions left unrecorded"
    assert row["by_client"] == row["cancellations"] > 0
