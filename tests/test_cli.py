"""The command line as a new user meets it (shared/ops/cli.py): options after the
subcommand, each subcommand's --help, one sentence for a malformed DATABASE_URL, .env
read, a busy port named with --port, a second `up` on one checkout refused, and the
demo practice with tokens PostgREST accepts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jwt
import psycopg
import pytest

from shared.ops import cli
from shared.ops.localpg import LocalCluster, free_port
from tests.data_layer import scratch_database

REPO_ROOT = Path(__file__).resolve().parent.parent
THERAPY_DB = [sys.executable, "-m", "shared.ops.cli"]


def therapy_db(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **(env or {})}
    return subprocess.run([*THERAPY_DB, *args], cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def test_migrate_takes_database_url_after_the_subcommand(pg_cluster):
    with scratch_database(pg_cluster) as url:
        done = therapy_db("migrate", "--database-url", url)
        again = therapy_db("--database-url", url, "migrate")
    assert done.returncode == 0, done.stderr
    assert "migration(s) applied" in done.stdout
    assert again.stdout.startswith("0 migration(s) applied"), again.stdout


@pytest.mark.parametrize(("command", "options"), [
    ("migrate", ["--database-url", "--local-dir"]),
    ("up", ["--database-url", "--local-dir", "--detach", "--port"]),
    ("demo", ["--database-url", "--port"]),
    ("settings", ["--database-url"]),
    ("deploy", ["--run", "--project", "--env-file", "--build-dir"]),
])
def test_each_subcommand_help_lists_its_options(command, options, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0
    for option in options:
        assert option in shown, f"{command} --help lacks {option}"


@pytest.mark.parametrize("url", ["not a url at all", "postgresql://[::1:5432/x", "host=127.0.0.1 port=abc=1"])
def test_a_malformed_database_url_is_one_sentence(url):
    answer = therapy_db("migrate", env={"DATABASE_URL": url})
    assert answer.returncode == 1
    assert "Traceback" not in answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), answer.stderr
    assert "DATABASE_URL" in lines[0] or "Cannot reach the database" in lines[0], lines[0]


def test_dotenv_sets_what_the_environment_does_not(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# a comment\n\nDATABASE_URL=postgresql://from-file/db\n"
                        "export SUPABASE_JWT_SECRET='quoted secret'\nALREADY=from-file\n")
    environ = {"ALREADY": "from-shell"}
    names = cli.read_dotenv(env_file, environ)
    assert names == ["DATABASE_URL", "SUPABASE_JWT_SECRET"]
    assert environ == {"ALREADY": "from-shell", "DATABASE_URL": "postgresql://from-file/db",
                       "SUPABASE_JWT_SECRET": "quoted secret"}


def test_up_on_a_busy_port_says_to_use_port(pg_cluster):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        answer = therapy_db("up", "--port", str(port), env={"DATABASE_URL": pg_cluster.url()})
    assert answer.returncode == 1
    assert f"Port {port} is already in use; choose another with --port" in answer.stderr


@pytest.fixture
def local_dir():
    """A directory the server user can enter (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="therapy-cli-test-"))  # LocalCluster hands it to the server user
    try:
        yield directory
    finally:
        if (directory / "data").exists():
            LocalCluster(directory).stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_a_second_up_on_the_same_checkout_is_refused_and_leaves_the_first_running(local_dir):
    port = free_port()
    first = subprocess.Popen([*THERAPY_DB, "--local-dir", str(local_dir), "up", "--port", str(port)],
                             cwd=REPO_ROOT, env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log: list[str] = []
    ready = threading.Event()

    def drain():
        for line in first.stdout:
            log.append(line)
            if line.startswith("Ready on"):
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(120) and first.poll() is None, "".join(log)
        second = therapy_db("--local-dir", str(local_dir), "up", "--port", str(free_port()))
        assert second.returncode == 1
        assert f"therapy-db up is already running for this checkout (process {first.pid}, " \
               f"http://127.0.0.1:{port})" in second.stderr
        database_url = next(line.split("=", 1)[1].strip() for line in log if line.startswith("DATABASE_URL="))
        with psycopg.connect(database_url) as conn:
            assert conn.execute("select 1").fetchone() == (1,), "the first one's database still runs"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=60)
    assert not (local_dir / "up.pid").exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(database_url, connect_timeout=3)


def test_demo_seeds_once_and_prints_tokens_for_its_people(pg_cluster):
    with scratch_database(pg_cluster) as url:
        secret = "a-demo-test-secret-with-more-than-32-characters"
        env = {"DATABASE_URL": url, "SUPABASE_JWT_SECRET": secret, "PORT": "8123"}
        first = therapy_db("demo", env=env)
        time.sleep(1)
        second = therapy_db("demo", env=env)
        with psycopg.connect(url) as conn:
            people = conn.execute("select role, count(*) from public.profiles group by role order by role").fetchall()
            windows = conn.execute("select count(*) from public.availability_windows").fetchone()[0]
            rates = conn.execute("select amount, currency, duration_minutes from public.specialist_rates").fetchall()

    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in first.stdout.splitlines())
    assert exports["SUPABASE_URL"] == "http://127.0.0.1:8123"
    assert exports["FUNCTIONS_URL"] == "http://127.0.0.1:8123/functions/v1"
    assert people == [("client", 2), ("specialist", 1)], "a second run reuses the same people"
    assert windows == 7 and [(str(a), c, d) for a, c, d in rates] == [("80.00", "EUR", 50)]
    claims = jwt.decode(exports["CLIENT_TOKEN"], secret, algorithms=["HS256"], audience="authenticated")
    assert claims["sub"] == exports["CLIENT_ID"] and claims["role"] == "authenticated"
    assert 86000 < claims["exp"] - time.time() <= 86400
    anon = jwt.decode(exports["SUPABASE_ANON_KEY"], secret, algorithms=["HS256"], options={"verify_aud": False})
    assert anon["role"] == "anon"
