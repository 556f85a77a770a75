"""Fixtures: a throwaway PostgreSQL with every migration applied, a connection per
test that is rolled back afterwards, and the people the tests act as.

The cluster is started once per run (random port, temporary directory, run as a
non-root user, pg_cron preloaded when installed). Tests that need pg_cron skip
without it, except in CI (``CI=true``), where every skip fails the run.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from shared.ops.localpg import LocalCluster
from shared.ops.migrate import migrate
from tests.support import ANON, Person, create_person

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")

pytest_plugins = ["tests.calendar_fixtures", "tests.storage_fixtures", "tests.functions_fixtures", "tests.rest_fixtures", "tests.notifications_fixtures"] if (Path(__file__).parent / "calendar_fixtures.py").exists() else []

APP_TABLES = (
    "public.profiles", "public.specialist_rates", "public.availability_windows",
    "public.specialist_availability_exceptions", "public.booking_packages", "public.recurring_bookings",
    "public.sessions", "public.booking_status_history", "public.booking_cancellations",
    "public.session_notes", "public.meeting_recordings", "public.audit_log",
    "public.intake_forms",
)


# -- the database ---------------------------------------------------------------

@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster for this test run, migrated once."""
    directory = Path(tempfile.mkdtemp(prefix="therapy-test-pg-"))
    cluster = LocalCluster(directory, fast=True)
    cluster.init()
    cluster.start()
    try:
        migrate(cluster.url(), log=lambda _line: None, settings_environ={})
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def database_url(pg_cluster) -> str:
    return pg_cluster.url()


# Test fixtures write sessions the way an operator imports them: with the booking
# rules off for their own connections (`app.booking_rules`, honoured for trusted
# writers only; sql/0019_booking_rules.sql). The functions' own connections, and
# every test of the rules, run with them on (`RULES_ON`).
FIXTURE_OPTIONS = "-c app.booking_rules=off"
RULES_ON = "set local app.booking_rules = 'on'"


@pytest.fixture
def db(database_url):
    """A superuser connection whose work is rolled back after the test."""
    with psycopg.connect(database_url, row_factory=dict_row, options=FIXTURE_OPTIONS) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.fixture
def committed_db(database_url):
    """For tests that need data other connections see (concurrency): an autocommit
    connection; every application table is emptied afterwards."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row, options=FIXTURE_OPTIONS) as conn:
        try:
            yield conn
        finally:
            # Replica mode skips the append-only triggers, for cleanup only.
            conn.execute("set session_replication_role = replica")
            conn.execute(f"truncate {', '.join(APP_TABLES)}, auth.users cascade")
            conn.execute("set session_replication_role = origin")


@pytest.fixture
def pg_cron(pg_cluster):
    """The cluster has pg_cron; skips without it, and fails instead in CI."""
    if not pg_cluster.has_pg_cron:
        reason = "pg_cron is not installed on this machine (Debian: postgresql-15-cron)"
        if IN_CI:
            pytest.fail(f"{reason}; CI must run every test")
        pytest.skip(reason)
    return pg_cluster


# -- people -----------------------------------------------------------------------

@pytest.fixture
def anon() -> Person:
    return ANON


@pytest.fixture
def client_a(db) -> Person:
    return create_person(db, "client", full_name="Alice Client", timezone="Europe/London")


@pytest.fixture
def client_b(db) -> Person:
    return create_person(db, "client", full_name="Bob Client")


@pytest.fixture
def specialist_s(db) -> Person:
    return create_person(db, "specialist", full_name="Sam Specialist", timezone="Europe/London")


@pytest.fixture
def specialist_t(db) -> Person:
    return create_person(db, "specialist", full_name="Tess Specialist", timezone="America/New_York")


@pytest.fixture
def admin(db) -> Person:
    return create_person(db, "admin", full_name="Ada Admin")


@pytest.fixture
def make_session(db):
    """Inserts a confirmed session (as the superuser) and returns its row."""
    def make(specialist: Person, client: Person, *, starts_in: timedelta = timedelta(days=2),
             minutes: int = 50, **columns):
        starts_at = datetime.now(timezone.utc) + starts_in
        values = {"specialist_id": specialist.id, "client_id": client.id, "starts_at": starts_at,
                  "ends_at": starts_at + timedelta(minutes=minutes), **columns}
        names = ", ".join(values)
        placeholders = ", ".join(["%s"] * len(values))
        return db.execute(f"insert into public.sessions ({names}) values ({placeholders}) returning *",
                          list(values.values())).fetchone()
    return make


# -- CI: a skipped test is not a passed test --------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_collectreport(report):
    """A whole module skipped while it is collected (importorskip, allow_module_level)."""
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if IN_CI and _skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if IN_CI and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} test(s) skipped, which fails the run: " + ", ".join(_skipped[:10]),
            red=True,
        )
