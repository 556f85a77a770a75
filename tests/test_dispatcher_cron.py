"""The daily dispatch, end to end: pg_cron fires a job, the job calls the served
recurring-dispatcher through private.call_function (URL and service key read from
Vault when it runs, never written in the job), the sessions appear; and a call that
fails (a wrong service key) shows where an operator looks: the scheduled-call results
and the health endpoint, although cron.job_run_details says "succeeded".

pg_cron 1.4 has minute granularity and runs in UTC: each test schedules its own job
for the coming minute and polls the database (at most 150 s) until it has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import psycopg
import pytest

from tests.dispatcher_support import add_recurrence, specialist_with_rate
from tests.functions_fixtures import ServedFunctions, fetch, service_token
from tests.support import create_person

pytestmark = pytest.mark.usefixtures("pg_cron")

WAIT_SECONDS = 150
DISPATCH_COMMAND = "select private.call_function('recurring-dispatcher', '{}'::jsonb, 600000)"
SECRET_NAMES = ("functions_url", "service_role_key")


def wait_for(conn: psycopg.Connection, query: str, params: list, what: str) -> dict:
    """Polls `query` until it returns a row; fails after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        row = conn.execute(query, params).fetchone()
        if row is not None:
            return row
        time.sleep(1)
    pytest.fail(f"waited {WAIT_SECONDS} s for {what}")


@pytest.fixture
def vault(committed_db: psycopg.Connection) -> Iterator[Callable[[str, str], None]]:
    """Sets the two secrets private.call_function reads; removes them afterwards."""
    existing = committed_db.execute("select count(*) as n from vault.decrypted_secrets where name = any(%s)",
                                    [list(SECRET_NAMES)]).fetchone()["n"]
    assert existing == 0, "no other test leaves these secrets behind"

    def put(functions_url: str, service_key: str) -> None:
        committed_db.execute("select vault.create_secret(%s, 'functions_url')", [functions_url])
        committed_db.execute("select vault.create_secret(%s, 'service_role_key')", [service_key])

    try:
        yield put
    finally:
        committed_db.execute("delete from vault.secrets where name = any(%s)", [list(SECRET_NAMES)])


@pytest.fixture
def cron_job(committed_db: psycopg.Connection) -> Iterator[Callable[[str, str], tuple[int, datetime]]]:
    """Schedules a job for the coming minute (the one after, when this one is nearly over);
    returns (job id, the moment it was scheduled). The every-minute jobs (calendar-sync,
    notifications) are paused meanwhile, so that only the test's calls reach the functions; every test job is
    unscheduled afterwards."""
    names: list[str] = []
    paused = [r["jobid"] for r in committed_db.execute(
        "select jobid from cron.job where schedule = '* * * * *' and active")]
    for job_id in paused:
        committed_db.execute("select cron.alter_job(%s, active := false)", [job_id])

    def schedule(name: str, command: str) -> tuple[int, datetime]:
        now = committed_db.execute("select now() as now").fetchone()["now"]
        target = now.replace(second=0, microsecond=0) + timedelta(minutes=2 if now.second >= 50 else 1)
        names.append(name)
        job_id = committed_db.execute("select cron.schedule(%s, %s, %s) as id",
                                      [name, f"{target.minute} {target.hour} * * *", command]).fetchone()["id"]
        return job_id, now

    try:
        yield schedule
    finally:
        for name in names:
            committed_db.execute("select cron.unschedule(jobid) from cron.job where jobname = %s", [name])
        for job_id in paused:
            committed_db.execute("select cron.alter_job(%s, active := true)", [job_id])


def due_recurrences(conn: psycopg.Connection, count: int) -> list:
    start = conn.execute("select current_date + 2 as d").fetchone()["d"]
    return [add_recurrence(conn, create_person(conn, "client"), specialist_with_rate(conn, zone="UTC"),
                           start_date=start, zone="UTC") for _ in range(count)]


def finished_run(conn: psycopg.Connection, job_id: int) -> dict:
    return wait_for(conn, """select status, return_message from cron.job_run_details
                             where jobid = %s and status in ('succeeded', 'failed')""",
                    [job_id], f"cron job {job_id} to run")


def dispatcher_call(conn: psycopg.Connection, since: datetime) -> dict:
    return wait_for(conn, """select status_code, failed, error_msg from private.scheduled_call_results
                             where url like '%%/recurring-dispatcher' and created >= %s""",
                    [since], "the dispatcher call's result")


def health_failures(served: ServedFunctions) -> int:
    answer = fetch(f"{served.base_url}/health")
    assert answer.status == 200
    return answer.json()["scheduled_call_failures_24h"]


def test_pg_cron_runs_the_dispatcher_and_the_sessions_appear(
        committed_db, functions_env, served_functions: ServedFunctions, vault, cron_job):
    recurring_ids = due_recurrences(committed_db, 3)
    vault(served_functions.base_url, service_token())

    job_id, scheduled_at = cron_job("dispatch-test", DISPATCH_COMMAND)
    run = finished_run(committed_db, job_id)

    assert run["status"] == "succeeded", run["return_message"]
    call = dispatcher_call(committed_db, scheduled_at)
    assert (call["status_code"], call["failed"], call["error_msg"]) == (200, False, None)
    made = committed_db.execute(
        "select recurring_booking_id from public.sessions where status = 'confirmed'").fetchall()
    assert sorted(r["recurring_booking_id"] for r in made) == sorted(recurring_ids)
    audit = committed_db.execute(
        "select status, new_values from public.audit_log where action = 'recurring_bookings_dispatched'").fetchall()
    assert [(a["status"], a["new_values"]["dispatched"]) for a in audit] == [("success", 3)]
    command = committed_db.execute("select command from cron.job where jobid = %s", [job_id]).fetchone()["command"]
    assert served_functions.base_url not in command and "Bearer" not in command


def test_failed_call_shows_in_the_call_results_and_health_not_only_as_a_succeeded_job(
        committed_db, functions_env, served_functions: ServedFunctions, vault, cron_job):
    due_recurrences(committed_db, 2)
    vault(served_functions.base_url, service_token(secret="a-wrong-service-key-secret-0123456789abcdefghij"))
    failures_before = health_failures(served_functions)

    job_id, scheduled_at = cron_job("dispatch-test-wrong-key", DISPATCH_COMMAND)
    run = finished_run(committed_db, job_id)

    assert run["status"] == "succeeded", "pg_cron only knows that the SQL ran"
    call = dispatcher_call(committed_db, scheduled_at)
    assert (call["status_code"], call["failed"]) == (401, True)
    failed_since = committed_db.execute(
        "select count(*) as n from private.scheduled_call_results where failed and created >= %s",
        [scheduled_at]).fetchone()["n"]
    assert failed_since == 1
    assert health_failures(served_functions) == failures_before + 1
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 0


def test_daily_dispatch_job_reads_its_secrets_from_vault_at_two_utc(db):
    job = db.execute("select schedule, command, active from cron.job where jobname = 'dispatch-recurring'").fetchone()

    assert job == {"schedule": "0 2 * * *", "command": DISPATCH_COMMAND, "active": True}


def test_cleanup_job_forgets_run_details_and_answers_older_than_a_week(db):
    job = db.execute("select schedule, command from cron.job where jobname = 'cleanup-job-history'").fetchone()
    assert job is not None and job["schedule"] == "17 3 * * *", "runs daily at 03:17 UTC"
    db.execute("""insert into net._http_response (id, status_code, created)
                  values (-1, 200, now() - interval '8 days'), (-2, 200, now() - interval '6 days')""")
    db.execute("""insert into cron.job_run_details (jobid, runid, status, start_time, end_time)
                  values (0, -1, 'succeeded', now() - interval '8 days', now() - interval '8 days'),
                         (0, -2, 'succeeded', now() - interval '6 days', now() - interval '6 days')""")

    db.execute(job["command"])

    assert [r["id"] for r in db.execute("select id from net._http_response where id < 0")] == [-2]
    assert [r["runid"] for r in db.execute("select runid from cron.job_run_details where runid < 0")] == [-2]


def test_cleanup_job_forgets_the_stand_ins_sent_requests_older_than_a_week(db):
    job = db.execute("select schedule, command from cron.job where jobname = 'cleanup-http-queue'").fetchone()
    assert job is not None and job["schedule"] == "19 3 * * *", "runs daily where net.http_post is the stand-in"
    old = db.execute("select net.http_post('http://127.0.0.1:9/old', timeout_milliseconds := 200) as id").fetchone()["id"]
    db.execute("update net._http_response set created = now() - interval '8 days' where id = %s", [old])
    recent = db.execute("select net.http_post('http://127.0.0.1:9/recent', timeout_milliseconds := 200) as id"
                        ).fetchone()["id"]

    db.execute(job["command"])

    kept = {r["id"] for r in db.execute("select id from net.http_request_queue where id = any(%s)", [[old, recent]])}
    assert kept == {recent}, "only requests answered more than a week ago are forgotten"
