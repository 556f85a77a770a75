"""The migration command (shared/ops/migrate.py) and the migrations themselves:
applied once, refused with one clear sentence, rolled back file by file, and
applicable with nothing but psql, as a Supabase project receives them."""

from __future__ import annotations

import shutil
import subprocess

import psycopg
import pytest

from shared.ops import migrate as migrate_module
from shared.ops.localpg import free_port
from shared.ops.migrate import REPO_ROOT, MigrationError, find_psql, migrate, migration_files
from tests.conftest import APP_TABLES
from tests.data_layer import scratch_database


def quiet(_line: str) -> None:
    pass


def recorded(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('private.schema_migrations')").fetchone()[0] is None:
            return []
        return [row[0] for row in conn.execute("select filename from private.schema_migrations order by filename")]


def exists(url: str, relation: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("select to_regclass(%s) is not null", [relation]).fetchone()[0]


def test_migrating_twice_applies_nothing_the_second_time(pg_cluster):
    everything = [m.name for m in migration_files()]
    with scratch_database(pg_cluster) as url:
        first = migrate(url, log=quiet)
        lines: list[str] = []
        second = migrate(url, log=lines.append)
        stored = recorded(url)

    assert first == everything, "a new database gets every file, sql/ then policies/, in name order"
    assert second == [], "the second run applies nothing"
    assert lines == [], "and has nothing to report"
    assert stored == sorted(everything), "each file is recorded once"


def test_an_unreachable_database_is_one_sentence(tmp_path):
    port = free_port()  # nothing listens there

    with pytest.raises(MigrationError) as caught:
        migrate(f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/postgres", log=quiet)

    message = str(caught.value)
    assert message.startswith("Cannot reach the database"), message
    assert f"127.0.0.1:{port}" in message, "it names where it looked"
    assert "s3cret-pw" not in message, "it never shows the password"
    assert "\n" not in message and "\t" not in message, f"one line: {message!r}"
    assert message.endswith(".") and "?" not in message and ". " not in message, f"one sentence: {message!r}"


def test_a_file_failing_midway_is_rolled_back_and_named(pg_cluster, tmp_path):
    for folder in ("sql", "policies"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    # Sorts between 0005_specialists.sql and 0006_recurring_bookings.sql.
    (tmp_path / "sql" / "0005a_broken.sql").write_text(
        "create table public.half_applied (id int);\n"
        "insert into public.half_applied values (1);\n"
        "select 1 / 0;\n"
        "create table public.never_reached (id int);\n"
    )

    with scratch_database(pg_cluster) as url:
        with pytest.raises(MigrationError) as caught:
            migrate(url, root=tmp_path, log=quiet)
        half_applied = exists(url, "public.half_applied")
        next_file_ran = exists(url, "public.recurring_bookings")
        stored = recorded(url)

    message = str(caught.value)
    assert message.startswith("sql/0005a_broken.sql failed and was rolled back: "), message
    assert "division by zero" in message, "it says what went wrong"
    assert not half_applied, "the statements before the failure are rolled back with it"
    assert not next_file_ran, "nothing after the failing file runs"
    names = [m.name for m in migration_files()]
    assert stored == names[:names.index("sql/0005_specialists.sql") + 1], \
        "the files before it stay applied and recorded; the failing one is not recorded"


def test_a_server_without_a_required_extension_is_refused_before_any_change(pg_cluster, monkeypatch):
    # A server really lacking btree_gist is not available here; an unknown name takes its place.
    monkeypatch.setattr(migrate_module, "REQUIRED_EXTENSIONS", ("no_such_extension_xyz",))

    with scratch_database(pg_cluster) as url:
        with pytest.raises(MigrationError) as caught:
            migrate(url, log=quiet)
        private_schema = exists(url, "private.schema_migrations")

    assert str(caught.value) == ("The extension no_such_extension_xyz is not available on this server; "
                                 "install PostgreSQL's contrib package (Debian: postgresql-contrib).")
    assert not private_schema, "nothing was written"


def test_sql_then_policies_apply_with_plain_psql_to_an_empty_database(pg_cluster):
    files = [m.path for m in migration_files()]
    with scratch_database(pg_cluster) as url:
        notices = []
        for path in files:
            proc = subprocess.run([find_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), url],
                                  capture_output=True, text=True)
            assert proc.returncode == 0, f"{path.relative_to(REPO_ROOT)} fails with plain psql:\n{proc.stderr}"
            notices.append(proc.stderr)
        missing = [table for table in APP_TABLES if not exists(url, table)]

    assert files[0].name == "0001_supabase_compat.sql" and files[-1].parent.name == "policies"
    assert missing == [], "every table of the data model exists"
    # pg_cron can be created only in the database `postgres`; elsewhere the file says so and goes on.
    assert "scheduled jobs are not created" in "".join(notices)
