"""The README's walkthrough ("A first booking, step by step"), run verbatim on a fresh
database: its code blocks are read from README.md between the walkthrough markers. The
first block (the stack) runs in the background until it prints "Ready"; the others run
in order in one bash, as a reader pastes them into a second terminal. The only things
the test chooses are what a reader's machine would: a fresh database (DATABASE_URL) and
a free port (PORT).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from shared.ops.localpg import free_port
from tests.rest_fixtures import require_postgrest

REPO_ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 120

pytestmark = pytest.mark.slow


def walkthrough_blocks(readme: str) -> list[str]:
    section = readme.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_walkthrough_has_a_server_block_and_steps():
    blocks = walkthrough_blocks((REPO_ROOT / "README.md").read_text())
    assert blocks[0].strip() == "bash .ci/up"
    assert len(blocks) >= 5


@pytest.fixture
def fresh_database(database_url):
    name = f"walkthrough_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"create database {name}")
    try:
        yield database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def test_readme_walkthrough_runs_verbatim_on_a_fresh_database(fresh_database):
    require_postgrest()
    server_block, *steps = walkthrough_blocks((REPO_ROOT / "README.md").read_text())
    port = free_port()
    # A reader's shell: no settings of this test run, a fresh database, a free port.
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                   "DATABASE_URL": fresh_database, "PORT": str(port)}
    server = subprocess.Popen(["bash", "-c", server_block], cwd=REPO_ROOT, env=environment, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    log: list[str] = []
    ready = threading.Event()

    def drain():
        for line in server.stdout:
            log.append(line)
            if line.startswith("Ready on"):
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert ready.wait(START_SECONDS) and server.poll() is None, "the stack did not start:\n" + "".join(log)
        assert any(line.startswith("SUPABASE_ANON_KEY=") for line in log), "up prints the anon key"
        assert postgrest_processes_for(fresh_database), "up started PostgREST on the fresh database"
        script = "set -euo pipefail\n" + "\n".join(steps)
        run = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=environment, text=True,
                             capture_output=True, timeout=300)
    finally:
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C, as the reader stops it
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    out = run.stdout
    assert run.returncode == 0, f"stdout:\n{out}\nstderr:\n{run.stderr}"
    assert '"success": true' in out or '"success":true' in out, out
    assert re.search(r"^upcoming: \S+ 10:00:00 Alex Morgan BK-\d{4}-\d+$", out, re.M), out
    assert "<h1>Cancel this session?</h1>" in out and "<h1>Your session is cancelled</h1>" in out, out
    assert "upcoming now: []" in out, out
    assert re.search(r"^session: \S+ cancelled Alex Morgan Cancelled by the client through the emailed link$",
                     out, re.M), out
    # Ctrl-C stopped PostgREST with everything else.
    assert postgrest_processes_for(fresh_database) == []


def postgrest_processes_for(database_url: str) -> list[int]:
    """Process ids of PostgREST servers whose PGRST_DB_URI names this database."""
    found = []
    name = database_url.rsplit("/", 1)[1]
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().split(b"\0")[0].endswith(b"postgrest"):
                environ = (proc / "environ").read_bytes().split(b"\0")
                if any(v.startswith(b"PGRST_DB_URI=") and v.endswith(b"/" + name.encode()) for v in environ):
                    found.append(int(proc.name))
        except OSError:
            continue
    return found
