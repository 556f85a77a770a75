"""Applies ``sql/`` then ``policies/`` in name order, the way a Supabase project
receives them: each file through ``psql -v ON_ERROR_STOP=1``, in one transaction
together with the row that records it in ``private.schema_migrations``. Files
already recorded are skipped. A database that cannot be migrated gets one clear
sentence (``MigrationError``), never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]
MIGRATION_DIRS = ("sql", "policies")
MINIMUM_SERVER_VERSION = 150000
REQUIRED_EXTENSIONS = ("btree_gist",)

BOOKKEEPING = """
create schema if not exists private;
create table if not exists private.schema_migrations (
  filename text primary key,     -- e.g. sql/0007_sessions.sql
  checksum text not null,        -- sha256 of the file when applied
  applied_at timestamptz not null default now()
);
"""


class MigrationError(RuntimeError):
    """The database cannot be migrated; the message is one sentence saying why."""


@dataclass(frozen=True)
class Migration:
    name: str  # relative path, e.g. "sql/0001_supabase_compat.sql"
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def migration_files(root: Path = REPO_ROOT) -> list[Migration]:
    """Every file of sql/ then policies/, each folder in name order."""
    files = []
    for folder in MIGRATION_DIRS:
        for path in sorted((root / folder).glob("*.sql")):
            files.append(Migration(f"{folder}/{path.name}", path))
    return files


def find_psql() -> str:
    found = shutil.which("psql")
    if found:
        return found
    from shared.ops.localpg import find_binaries

    candidate = find_binaries().bindir / "psql"
    if candidate.exists():
        return str(candidate)
    raise MigrationError("psql was not found; install the PostgreSQL client (Debian: postgresql-client-15).")


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # libpq's first line ends with the cause: "... failed: Connection refused".
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        reason = first.rsplit("failed:", 1)[-1].strip().rstrip(".") or "no answer"
        raise MigrationError(
            f"Cannot reach the database ({_redact(url)}): {reason[0].lower() + reason[1:]}.") from None


def _redact(url: str) -> str:
    """The URL without its password, fit for a message."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = info.get("host", "localhost")
    return f"{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def check_server(conn: psycopg.Connection) -> None:
    version = conn.info.server_version
    if version < MINIMUM_SERVER_VERSION:
        raise MigrationError(
            f"PostgreSQL 15 or newer is needed; this server is {version // 10000}.{version % 10000}."
        )
    available = {
        row[0]
        for row in conn.execute(
            "select name from pg_available_extensions where name = any(%s)", [list(REQUIRED_EXTENSIONS)]
        )
    }
    for extension in REQUIRED_EXTENSIONS:
        if extension not in available:
            raise MigrationError(
                f"The extension {extension} is not available on this server; "
                "install PostgreSQL's contrib package (Debian: postgresql-contrib)."
            )


def applied(conn: psycopg.Connection) -> dict[str, str]:
    conn.execute(BOOKKEEPING)
    return dict(conn.execute("select filename, checksum from private.schema_migrations").fetchall())


def migrate(url: str, root: Path = REPO_ROOT, log=print, settings_environ: Mapping[str, str] | None = None) -> list[str]:
    """Applies what has not run yet, then the practice settings found in the
    environment (``settings_environ``, default ``os.environ``); returns the names applied now."""
    with _connect(url) as conn:
        check_server(conn)
        done = applied(conn)
    psql = find_psql()
    newly = []
    for migration in migration_files(root):
        checksum = migration.checksum
        if migration.name in done:
            if done[migration.name] != checksum:
                log(f"warning: {migration.name} changed after it was applied; it is not run again.")
            continue
        record = (
            "insert into private.schema_migrations (filename, checksum) "
            f"values ('{migration.name}', '{checksum}')"
        )
        proc = subprocess.run(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
             "-d", url, "-f", str(migration.path), "-c", record],
            capture_output=True, text=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
        )
        if proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()
            first = next((line for line in detail if "ERROR" in line), detail[-1] if detail else "")
            raise MigrationError(f"{migration.name} failed and was rolled back: {first}")
        newly.append(migration.name)
        log(f"applied {migration.name}")
    apply_settings(url, settings_environ, log)
    return newly


def apply_settings(url: str, environ: Mapping[str, str] | None = None, log=print) -> dict[str, str]:
    """Writes the practice settings set in ``environ`` (default ``os.environ``) to the database."""
    from shared.ops import practice_settings

    with _connect(url) as conn:
        try:
            written = practice_settings.apply(conn, environ)
        except practice_settings.PracticeSettingsError as exc:
            raise MigrationError(f"Practice setting refused: {exc}.") from None
    for name, value in written.items():
        log(f"practice setting {name} = {value or 'null'} (from {name.upper()})")
    return written
