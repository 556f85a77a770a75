"""recording-expiry: recordings past their expires_at leave Storage, then their rows are
marked deleted and kept; a run that Storage interrupts is finished by the next; two runs
at once remove each object once. The real supabase client talks to the fake Storage.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import functions_framework
import psycopg
import pytest

from shared.storage import expiry
from tests.functions_fixtures import (
    AppClient, FunctionClient, FunctionsEnv, ServedClient, ServedFunctions, bearer, service_bearer,
    service_token,
)
from tests.storage_fixtures import BUCKET
from tests.storage_server import FakeStorageServer
from tests.support import create_person

REPO_ROOT = Path(__file__).resolve().parent.parent
DELETE_PATH = f"/storage/v1/object/{BUCKET}"


@pytest.fixture(scope="module")
def _expiry_app():
    return functions_framework.create_app("recording_expiry", str(REPO_ROOT / "functions/recording-expiry/main.py"))


@pytest.fixture(params=["app", "served"])
def expiry_api(request, functions_env: FunctionsEnv, storage: FakeStorageServer) -> FunctionClient:
    if request.param == "served":
        return ServedClient(request.getfixturevalue("served_functions").base_url, "recording-expiry")
    return AppClient(request.getfixturevalue("_expiry_app"))


@pytest.fixture
def app_api(functions_env: FunctionsEnv, storage: FakeStorageServer, _expiry_app) -> FunctionClient:
    return AppClient(_expiry_app)


@pytest.fixture
def sessions(committed_db: psycopg.Connection) -> Callable[[int], list[dict]]:
    """`sessions(n)`: n past sessions of one specialist with one client each."""
    specialist = create_person(committed_db, "specialist")
    made: list[dict] = []

    def make(count: int) -> list[dict]:
        rows = []
        for _ in range(count):
            client = create_person(committed_db, "client")
            starts_at = (datetime.now(timezone.utc) - timedelta(days=5, hours=len(made))).replace(microsecond=0)
            rows.append(committed_db.execute(
                """insert into public.sessions (specialist_id, client_id, starts_at, ends_at)
                   values (%s, %s, %s, %s) returning *""",
                [specialist.id, client.id, starts_at, starts_at + timedelta(minutes=50)]).fetchone())
            made.append(rows[-1])
        return rows
    return make


@pytest.fixture
def expired(sessions, recording) -> Callable[[int], list[dict]]:
    """`expired(n)`: n recordings (with their objects) that expired an hour ago."""
    return lambda count: [recording(s, created_ago=timedelta(days=3), expires_in=timedelta(hours=-1))
                          for s in sessions(count)]


def run(api: FunctionClient):
    return api.post_json({}, headers=service_bearer())


def marked(conn: psycopg.Connection, rows: list[dict]) -> dict:
    found = conn.execute("select id, deleted_at from public.meeting_recordings where id = any(%s)",
                         [[r["id"] for r in rows]]).fetchall()
    return {r["id"]: r["deleted_at"] for r in found}


def deletion_audits(conn: psycopg.Connection, rows: list[dict]) -> int:
    return conn.execute("select count(*) as n from public.audit_log where action = 'recording_deleted' "
                        "and entity_id = any(%s)", [[r["id"] for r in rows]]).fetchone()["n"]


def named_in_deletes(storage: FakeStorageServer) -> list[str]:
    return [path for request in storage.recorded("DELETE", DELETE_PATH) if request.status == 200
            for path in request.json()["prefixes"]]


# -- the job ------------------------------------------------------------------------------------------

def test_expired_objects_are_removed_then_their_rows_marked_and_kept(
        expiry_api, expired, sessions, recording, storage, committed_db):
    due = expired(3)
    later, kept = sessions(2)
    not_yet = recording(later, expires_in=timedelta(days=1))
    forever = recording(kept)

    answer = run(expiry_api)

    assert (answer.status, answer.json()) == (200, {"success": True, "removed": 3})
    assert [storage.exists(BUCKET, r["storage_path"]) for r in due] == [False] * 3
    assert storage.exists(BUCKET, not_yet["storage_path"]) and storage.exists(BUCKET, forever["storage_path"])
    assert all(value is not None for value in marked(committed_db, due).values())
    assert set(marked(committed_db, [not_yet, forever]).values()) == {None}
    assert deletion_audits(committed_db, due) == 3
    (delete,) = storage.recorded("DELETE")
    assert sorted(delete.json()["prefixes"]) == sorted(r["storage_path"] for r in due)

    again = run(expiry_api)
    assert (again.status, again.json()) == (200, {"success": True, "removed": 0})
    assert len(storage.recorded("DELETE")) == 1, "nothing left to remove, nothing sent"


def test_only_the_service_runs_it(expiry_api, expired, storage, committed_db):
    due = expired(1)
    admin = create_person(committed_db, "admin")
    for headers in ({}, bearer(admin), {"Authorization": f"Bearer {service_token(role='anon')}"}):
        answer = expiry_api.post_json({}, headers=headers)
        assert (answer.status, answer.json()["error"]) == (401, "UNAUTHORIZED")
    assert storage.recorded() == []
    assert set(marked(committed_db, due).values()) == {None}


def test_a_removed_recording_answers_expired_to_its_parties(functions_env, expired, storage, committed_db, app_api):
    (row,) = expired(1)
    assert run(app_api).status == 200
    session = committed_db.execute("select client_id from public.sessions where id = %s",
                                   [row["booking_id"]]).fetchone()
    link = functions_framework.create_app("recording_url", str(REPO_ROOT / "functions/recording-url/main.py"))
    answer = AppClient(link).post_json({"recording_id": str(row["id"])}, headers=bearer(session["client_id"]))
    assert (answer.status, answer.json()["error"]) == (410, "RECORDING_EXPIRED")


# -- when Storage fails ---------------------------------------------------------------------------------

def test_storage_failing_half_way_leaves_the_rest_for_the_next_run(
        app_api, expired, storage, committed_db, monkeypatch):
    monkeypatch.setattr(expiry, "BATCH_SIZE", 2)
    due = expired(5)
    storage.fail(503, method="DELETE", after=1, times=1)  # the first batch goes through, the second fails

    first = run(app_api)

    assert first.status == 503
    assert first.json()["error"] == "STORAGE_UNAVAILABLE"
    assert "2 were removed in this run, the rest are retried on the next" in first.json()["message"]
    done = {row_id for row_id, at in marked(committed_db, due).items() if at is not None}
    assert len(done) == 2
    for row in due:  # a row is marked exactly when its object is gone
        assert storage.exists(BUCKET, row["storage_path"]) == (row["id"] not in done)
    assert deletion_audits(committed_db, due) == 2

    second = run(app_api)

    assert (second.status, second.json()) == (200, {"success": True, "removed": 3})
    assert all(at is not None for at in marked(committed_db, due).values())
    assert [storage.exists(BUCKET, r["storage_path"]) for r in due] == [False] * 5
    assert set(storage.removals.values()) == {1} and len(storage.removals) == 5
    assert deletion_audits(committed_db, due) == 5


def test_an_answer_lost_after_storage_removed_the_objects_is_finished_by_the_next_run(
        app_api, expired, storage, committed_db):
    due = expired(2)
    storage.fail(502, method="DELETE", times=1, done_anyway=True)

    assert run(app_api).status == 503
    assert set(marked(committed_db, due).values()) == {None}, "not marked: the job could not know"
    assert not any(storage.exists(BUCKET, r["storage_path"]) for r in due)

    answer = run(app_api)

    assert (answer.status, answer.json()) == (200, {"success": True, "removed": 2})
    assert all(at is not None for at in marked(committed_db, due).values())
    assert deletion_audits(committed_db, due) == 2


def test_storage_unreachable_answers_503_and_marks_nothing(app_api, functions_env, expired, committed_db):
    due = expired(2)
    from shared.ops.localpg import free_port
    functions_env.set(SUPABASE_URL=f"http://127.0.0.1:{free_port()}")
    answer = run(app_api)
    assert (answer.status, answer.json()["error"]) == (503, "STORAGE_UNAVAILABLE")
    assert set(marked(committed_db, due).values()) == {None}


# -- two runs at once ---------------------------------------------------------------------------------

def test_two_runs_at_once_remove_each_object_once(app_api, expired, storage, committed_db, monkeypatch):
    monkeypatch.setattr(expiry, "BATCH_SIZE", 2)
    due = expired(8)
    storage.delay = 0.3  # each removal takes a while, so the runs overlap
    start = threading.Barrier(2)
    answers: list = [None, None]

    def job(index: int) -> None:
        start.wait()
        answers[index] = run(app_api)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [a.status for a in answers] == [200, 200]
    removed = [a.json()["removed"] for a in answers]
    assert sum(removed) == 8 and min(removed) > 0, removed
    assert sorted(named_in_deletes(storage)) == sorted(r["storage_path"] for r in due), "each object asked once"
    assert set(storage.removals.values()) == {1} and len(storage.removals) == 8
    assert all(at is not None for at in marked(committed_db, due).values())
    assert deletion_audits(committed_db, due) == 8


# -- the schedule ---------------------------------------------------------------------------------------

@pytest.fixture
def vault(committed_db: psycopg.Connection) -> Iterator[Callable[[str, str], None]]:
    names = ["functions_url", "service_role_key"]

    def put(functions_url: str, service_key: str) -> None:
        committed_db.execute("select vault.create_secret(%s, 'functions_url')", [functions_url])
        committed_db.execute("select vault.create_secret(%s, 'service_role_key')", [service_key])

    try:
        yield put
    finally:
        committed_db.execute("delete from vault.secrets where name = any(%s)", [names])


def test_pg_cron_runs_the_job_daily_through_call_function(pg_cron, committed_db):
    job = committed_db.execute("select schedule, command from cron.job where jobname = 'recording-expiry'").fetchone()
    assert job["schedule"] == "41 3 * * *"
    assert job["command"] == "select private.call_function('recording-expiry', '{}'::jsonb, 300000)"
    from shared.ops.serve import load_deploy
    (spec,) = [f for f in load_deploy(REPO_ROOT / "deploy.yaml") if f.name == "recording-expiry"]
    assert (spec.trigger, spec.schedule) == ("schedule", job["schedule"])


def test_the_jobs_command_calls_the_served_function_with_the_service_key(
        pg_cron, committed_db, expired, storage, served_functions: ServedFunctions, vault):
    due = expired(2)
    vault(served_functions.base_url, service_token())
    command = committed_db.execute("select command from cron.job where jobname = 'recording-expiry'").fetchone()
    call = committed_db.execute(command["command"] + " as id").fetchone()["id"]  # the stand-in sends at once

    result = committed_db.execute("select status_code, failed from private.scheduled_call_results where id = %s",
                                  [call]).fetchone()

    assert (result["status_code"], result["failed"]) == (200, False)
    assert all(at is not None for at in marked(committed_db, due).values())
    assert not any(storage.exists(BUCKET, r["storage_path"]) for r in due)


# -- the benchmark ---------------------------------------------------------------------------------------

def test_the_recordings_benchmark_runs_in_its_small_mode() -> None:
    """`python -m tests.bench.recordings --small` end to end: its own cluster, Storage and server."""
    run = subprocess.run([sys.executable, "-m", "tests.bench.recordings", "--small"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)

    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^links: 96 succeeded, 0 failed$", run.stdout, re.M), run.stdout
    assert re.search(r"^checked: 100 links audited$", run.stdout, re.M), run.stdout
    assert re.search(r"^expiry: 400 recordings removed and marked in [\d.]+ s \(HTTP 200\), 4 Storage removal calls$",
                     run.stdout, re.M), run.stdout
    assert re.search(r"^checked: 400 rows kept, 0 unmarked, 400 files removed once each: True$", run.stdout, re.M)
    assert re.search(r"^latency ms: p50 [\d.]+, p95 [\d.]+", run.stdout, re.M), run.stdout
