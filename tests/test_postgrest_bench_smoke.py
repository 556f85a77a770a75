"""The PostgREST read benchmark (tests/bench/postgrest_reads.py) at a tiny scale, so
that its three paths cannot rot: each call's row count is checked against the
specialist's upcoming sessions inside the benchmark, and every path reports. Timings
are not checked here; run ``python -m tests.bench.postgrest_reads`` for those."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from shared.ops.migrate import migrate
from tests.bench import postgrest_reads, rls_reads
from tests.rest_fixtures import require_postgrest

pytestmark = pytest.mark.slow


def test_every_path_reads_the_specialists_upcoming_sessions(pg_cluster):
    require_postgrest()
    name = f"bench_rest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        url = pg_cluster.url(name)
        migrate(url, log=lambda _line: None)
        scale = rls_reads.Scale(specialists=10, days=20, calls=5)
        rls_reads.seed(url, scale, log=lambda _line: None)
        lines: list[str] = []
        results = postgrest_reads.run(url, scale, out=lines.append)
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')

    assert set(results) == {"emulated (psycopg, set_config)", "PostgREST", "front door (/rest/v1)"}
    assert all(len(ms) == 5 for ms in results.values())
    assert [line.split("  ")[0] for line in lines[2:]] == list(results)
