"""Calendar deletions are never lost.

Cancelling queues the event's deletion (private.calendar_deletions) in the cancelling
transaction; booking-cancel tries it right after the commit, and whatever fails is
retried with backoff by the scheduled job, the calendar-sync function (a POST with the
service key), until Google confirms (404 and 410 count as done). Deletions failing for
over a day show in private.calendar_deletions_stuck and in /functions/v1/health.

Calendar down during a cancel: the fake Calendar API answers 500, or does the work and
then stalls past the client's timeout (both for the first try and its one retry, the
GOOGLE_CALENDAR_NUM_RETRIES of the test settings).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from shared import calendar, calendar_sync
from shared.calendar_sync import backoff
from tests.functions_fixtures import (
    CALENDAR_NUM_RETRIES, Answer, BookableSpecialist, FunctionClient, FunctionsApi, FunctionsEnv, bearer, fetch,
    service_bearer, service_token,
)
from tests.support import Person, create_person, request_as

SUCCESS = {"success": True, "message": "Booking cancelled successfully. No refund will be processed."}
CALENDAR_ID = "rosa.lind@clinic.test"
# A failed deletion is tried this many times by one call: the first try and the client's retries.
TRIES_PER_CALL = 1 + int(CALENDAR_NUM_RETRIES)
NOTHING_DUE = {"success": True, "deleted": 0, "failed": 0, "stuck_reported": 0, "events_created": 0, "events_failed": 0,
                 "events_moved": 0, "moves_failed": 0}


# -- helpers --------------------------------------------------------------------------

@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist(full_name="Dr Rosa Lind", calendar_id=CALENDAR_ID)


@pytest.fixture
def session(booked_session, specialist: BookableSpecialist, client: Person) -> dict:
    return booked_session(specialist, client)


@pytest.fixture
def api_in_process(configured_functions_api) -> FunctionsApi:
    """The functions in this process (for tests that patch their code)."""
    return configured_functions_api("app")


def run_job(api: FunctionClient) -> dict:
    """One run of the scheduled retry job, as pg_cron calls it: a POST with the service key."""
    answer = api.post_json({}, headers=service_bearer())
    assert answer.status == 200, answer.text
    return answer.json()


def queued(conn: psycopg.Connection, session_id: uuid.UUID) -> dict:
    return conn.execute("select * from private.calendar_deletions where session_id = %s", [session_id]).fetchone()


def make_due(conn: psycopg.Connection, session_id: uuid.UUID) -> None:
    conn.execute("update private.calendar_deletions set next_attempt_at = now() where session_id = %s", [session_id])


def event_path(session_id: uuid.UUID) -> str:
    return f"/calendar/v3/calendars/{CALENDAR_ID.replace('@', '%40')}/events/{session_id.hex}"


def queue_by_frontend(database_url: str, client: Person, session_id: uuid.UUID) -> None:
    """The client cancels by inserting into booking_cancellations under RLS: the deletion is
    queued (due at once) and not tried, as no function ran."""
    with request_as(database_url, client) as conn:
        conn.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, %s)",
                     [session_id, client.id, "Moving away"])


def wait_for(condition, what: str, timeout: float = 10) -> None:
    """Waits until `condition()` is true (the fake server records requests as they arrive)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def cancel(api: FunctionsApi, caller: Person, session_id: uuid.UUID) -> Answer:
    return api.booking_cancel.post_json({"booking_id": str(session_id), "reason": "Unwell"}, headers=bearer(caller))


# -- the backoff ----------------------------------------------------------------------

@pytest.mark.parametrize(("attempts", "minutes"), [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)])
def test_backoff_doubles_from_a_minute_up_to_an_hour(attempts: int, minutes: int) -> None:
    assert backoff(attempts) == timedelta(minutes=minutes)


# -- Google down during the cancel ----------------------------------------------------------

@pytest.mark.parametrize("outage", ["500", "timeout"])
def test_calendar_down_during_a_cancel_the_cancel_succeeds_and_the_job_deletes_the_event_once(
        outage: str, functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, session: dict) -> None:
    server = functions_env.server
    if outage == "500":
        server.fail(500, times=TRIES_PER_CALL, method="DELETE")
    else:  # Google deletes the event, then does not answer in time
        server.fail(hang=5, times=TRIES_PER_CALL, method="DELETE")
    started = datetime.now(timezone.utc)

    answer = cancel(functions_api, client, session["id"])

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert committed_db.execute("select status from public.sessions where id = %s",
                                [session["id"]]).fetchone()["status"] == "cancelled"
    assert len(server.api_calls("DELETE")) == TRIES_PER_CALL
    pending = queued(committed_db, session["id"])
    assert (pending["completed_at"], pending["attempts"], pending["event_id"], pending["calendar_id"]) == (
        None, 1, session["id"].hex, CALENDAR_ID)
    assert pending["last_error"] == (
        "Google Calendar answered HTTP 500 while deleting event " + session["id"].hex if outage == "500"
        else "Google Calendar did not answer while deleting event " + session["id"].hex + " (TimeoutError)")
    # Backed off: the next try is a minute after the failure, so the job leaves it for now.
    assert started + timedelta(seconds=50) < pending["next_attempt_at"] < started + timedelta(minutes=2)
    requests_before = len(server.requests)
    assert run_job(functions_api.calendar_sync) == NOTHING_DUE
    assert len(server.requests) == requests_before

    make_due(committed_db, session["id"])  # a minute later; Google is back
    first = run_job(functions_api.calendar_sync)
    second = run_job(functions_api.calendar_sync)

    assert first == {"success": True, "deleted": 1, "failed": 0, "stuck_reported": 0, "events_created": 0, "events_failed": 0,
                 "events_moved": 0, "moves_failed": 0}
    assert second == NOTHING_DUE
    job_deletes = server.api_calls("DELETE")[TRIES_PER_CALL:]
    # After a 500 the event was still there; after a timeout Google had already deleted it (410).
    assert [(call.path, call.status) for call in job_deletes] == [
        (event_path(session["id"]), 204 if outage == "500" else 410)]
    assert server.events(CALENDAR_ID) == {}
    assert server.deleted_event_ids(CALENDAR_ID) == {session["id"].hex}
    done = queued(committed_db, session["id"])
    assert (done["attempts"], done["last_error"]) == (2, None) and done["completed_at"] is not None


def test_a_job_run_while_google_is_still_down_backs_off_further(
        calendar_sync_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, session: dict) -> None:
    server = functions_env.server
    server.fail(500, times=None, method="DELETE")
    queue_by_frontend(functions_env.database_url, client, session["id"])
    started = datetime.now(timezone.utc)

    runs = [run_job(calendar_sync_api)]
    make_due(committed_db, session["id"])
    runs.append(run_job(calendar_sync_api))
    runs.append(run_job(calendar_sync_api))  # not due again yet

    assert runs == [{"success": True, "deleted": 0, "failed": 1, "stuck_reported": 0, "events_created": 0, "events_failed": 0,
                 "events_moved": 0, "moves_failed": 0}] * 2 + [NOTHING_DUE]
    pending = queued(committed_db, session["id"])
    assert (pending["attempts"], pending["completed_at"]) == (2, None)
    assert "HTTP 500" in pending["last_error"]
    assert started + timedelta(seconds=110) < pending["next_attempt_at"] < started + timedelta(minutes=3)
    assert len(server.api_calls("DELETE")) == 2 * TRIES_PER_CALL
    assert session["id"].hex in server.events(CALENDAR_ID)


def test_a_deletion_failing_for_days_is_still_retried_hourly_and_does_not_block_the_others(
        calendar_sync_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, booked_session) -> None:
    """Hourly failures reach 42 attempts in under two days; the job must keep going past that."""
    old, new = booked_session(specialist, client), booked_session(specialist, client, starts_in=timedelta(days=4))
    for row in (old, new):
        queue_by_frontend(functions_env.database_url, client, row["id"])
    committed_db.execute("update private.calendar_deletions set attempts = 60 where session_id = %s", [old["id"]])
    functions_env.server.fail(500, times=None, method="DELETE", path_prefix=event_path(old["id"]))
    started = datetime.now(timezone.utc)

    report = run_job(calendar_sync_api)

    assert (report["deleted"], report["failed"]) == (1, 1)
    pending = queued(committed_db, old["id"])
    assert (pending["attempts"], pending["completed_at"]) == (61, None)
    assert started + timedelta(minutes=59) < pending["next_attempt_at"] < started + timedelta(minutes=61)
    assert queued(committed_db, new["id"])["completed_at"] is not None
    assert list(functions_env.server.events(CALENDAR_ID)) == [old["id"].hex]


@pytest.mark.parametrize("status", [404, 410])
@pytest.mark.parametrize("when", ["at once", "by the job"])
def test_an_event_google_no_longer_has_counts_as_deleted(
        when: str, status: int, functions_api: FunctionsApi, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    """404: never there (or gone long ago); 410: deleted already (e.g. by hand, or by a try
    whose answer was lost). Either way nothing is left to do."""
    server = functions_env.server
    server.fail(status, times=None, method="DELETE")
    if when == "at once":
        assert cancel(functions_api, client, session["id"]).status == 200
    else:
        queue_by_frontend(functions_env.database_url, client, session["id"])
        assert run_job(functions_api.calendar_sync) == {"success": True, "deleted": 1, "failed": 0,
                                                        "stuck_reported": 0, "events_created": 0, "events_failed": 0,
                 "events_moved": 0, "moves_failed": 0}

    assert run_job(functions_api.calendar_sync) == NOTHING_DUE
    assert [call.status for call in server.api_calls("DELETE")] == [status]
    done = queued(committed_db, session["id"])
    assert (done["attempts"], done["last_error"]) == (1, None) and done["completed_at"] is not None


def test_a_session_without_a_calendar_event_is_cancelled_without_calling_google(
        functions_api: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist, booked_session) -> None:
    """Booked while calendar sync was off: there is nothing to delete."""
    unsynced = booked_session(specialist, client, google_calendar_event_id=None)

    answer = cancel(functions_api, client, unsynced["id"])

    assert (answer.status, answer.json()) == (200, SUCCESS)
    assert committed_db.execute("select status from public.sessions").fetchone()["status"] == "cancelled"
    assert queued(committed_db, unsynced["id"]) is None
    assert run_job(functions_api.calendar_sync) == NOTHING_DUE
    assert functions_env.server.api_calls() == []


def test_the_job_leaves_alone_a_deletion_the_cancel_is_still_trying(
        configured_functions_api, functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person,
        session: dict) -> None:
    """The immediate try holds its queue row while Google is slow; the job, meeting it, skips
    it rather than sending a second DELETE (the row is due: it was queued just now)."""
    api = configured_functions_api("served")  # two callers at once: the served process
    server = functions_env.server
    server.fail(hang=5, times=TRIES_PER_CALL, method="DELETE")
    answers: list[Answer] = []
    cancelling = threading.Thread(target=lambda: answers.append(cancel(api, client, session["id"])))
    cancelling.start()
    try:
        wait_for(lambda: server.api_calls("DELETE"), "the cancel's first DELETE")

        during = run_job(api.calendar_sync)
        still_in_flight = cancelling.is_alive()
    finally:
        cancelling.join(30)

    assert still_in_flight, "the job ran after the cancel's try ended: the test proved nothing"
    assert during == NOTHING_DUE
    assert [(a.status, a.json()) for a in answers] == [(200, SUCCESS)]
    assert len(server.api_calls("DELETE")) == TRIES_PER_CALL  # the cancel's tries, none from the job
    assert queued(committed_db, session["id"])["attempts"] == 1


# -- a frontend's direct cancellation -------------------------------------------------------------

def test_a_cancellation_inserted_by_a_frontend_under_rls_queues_the_deletion_and_the_job_deletes_it(
        calendar_sync_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, session: dict) -> None:
    with request_as(functions_env.database_url, client) as conn:  # what supabase-js's insert does
        conn.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) values (%s, %s, %s)",
                     [session["id"], client.id, "Moving away"])

    assert committed_db.execute("select status from public.sessions where id = %s",
                                [session["id"]]).fetchone()["status"] == "cancelled"
    pending = queued(committed_db, session["id"])
    assert (pending["event_id"], pending["calendar_id"], pending["attempts"], pending["completed_at"]) == (
        session["id"].hex, CALENDAR_ID, 0, None)
    assert functions_env.server.requests == []  # no function ran: nothing was tried yet

    first, second = run_job(calendar_sync_api), run_job(calendar_sync_api)

    assert (first, second) == ({"success": True, "deleted": 1, "failed": 0, "stuck_reported": 0, "events_created": 0, "events_failed": 0,
                 "events_moved": 0, "moves_failed": 0}, NOTHING_DUE)
    assert [(c.path, c.status) for c in functions_env.server.api_calls("DELETE")] == [(event_path(session["id"]), 204)]
    assert functions_env.server.events(CALENDAR_ID) == {}
    assert queued(committed_db, session["id"])["completed_at"] is not None


# -- who may run the job -----------------------------------------------------------------------------

REFUSED_CALLERS = {
    "a client's token": lambda client: bearer(client),
    "the anon key": lambda client: {"Authorization": f"Bearer {service_token(role='anon')}"},
    "a service token signed with another secret": lambda client: service_bearer(secret="forged-" + "y" * 60),
    "an expired service token": lambda client: service_bearer(expires_in=-3600),
    "no Authorization header": lambda client: {},
}


@pytest.mark.parametrize("case", list(REFUSED_CALLERS))
def test_calendar_sync_refuses_anyone_but_the_service(
        case: str, calendar_sync_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, session: dict) -> None:
    queue_by_frontend(functions_env.database_url, client, session["id"])  # a due deletion the job would do

    answer = calendar_sync_api.post_json({}, headers=REFUSED_CALLERS[case](client))

    body = answer.json()
    assert (answer.status, body["success"], body["error"]) == (401, False, "UNAUTHORIZED"), body
    assert functions_env.server.requests == []
    assert queued(committed_db, session["id"])["attempts"] == 0


def test_calendar_sync_answers_only_post(calendar_sync_api: FunctionClient) -> None:
    answer = calendar_sync_api.request("GET", headers=service_bearer())

    assert (answer.status, answer.json()["error"], answer.header("Allow")) == (405, "METHOD_NOT_ALLOWED", "POST")


# -- stuck for a day ---------------------------------------------------------------------------------

def test_a_deletion_failing_for_a_day_is_listed_as_stuck_and_health_says_so_until_it_succeeds(
        served_functions, calendar_sync_api: FunctionClient, functions_env: FunctionsEnv,
        committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    server = functions_env.server
    health_url = f"{served_functions.base_url}/health"
    queue_by_frontend(functions_env.database_url, client, session["id"])
    server.fail(500, times=None, method="DELETE")
    assert run_job(calendar_sync_api)["failed"] == 1
    stuck_view = "select session_id, event_id, attempts from private.calendar_deletions_stuck"
    assert committed_db.execute(stuck_view).fetchall() == []
    assert fetch(health_url).status == 200

    committed_db.execute("update private.calendar_deletions set created_at = now() - interval '25 hours', "
                         "next_attempt_at = now()")
    report = run_job(calendar_sync_api)

    assert report == {"success": True, "deleted": 0, "failed": 1, "stuck_reported": 1, "events_created": 0, "events_failed": 0,
                 "events_moved": 0, "moves_failed": 0}
    assert committed_db.execute(stuck_view).fetchall() == [
        {"session_id": session["id"], "event_id": session["id"].hex, "attempts": 2}]
    health = fetch(health_url)
    assert health.status == 503
    assert (health.json()["status"], health.json()["calendar_deletions_stuck"]) == ("degraded", 1)

    server.reset()  # Google is back
    make_due(committed_db, session["id"])
    assert run_job(calendar_sync_api)["deleted"] == 1
    assert committed_db.execute(stuck_view).fetchall() == []
    health = fetch(health_url)
    assert (health.status, health.json()["calendar_deletions_stuck"]) == (200, 0)


# -- anything else going wrong after the commit ----------------------------------------------------

def test_an_unexpected_error_in_the_deletion_after_the_commit_still_answers_success(
        api_in_process: FunctionsApi, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        monkeypatch: pytest.MonkeyPatch, client: Person, session: dict) -> None:
    """The cancellation is committed: the caller must hear so, and the job takes the deletion."""
    def broken(self, *args, **kwargs):
        raise KeyError("an unexpected failure inside the calendar client")

    monkeypatch.setattr(calendar.CalendarGateway, "delete_session_event", broken)

    answer = cancel(api_in_process, client, session["id"])

    assert (answer.status, answer.json()) == (200, SUCCESS)
    pending = queued(committed_db, session["id"])
    assert pending["completed_at"] is None
    monkeypatch.undo()
    assert run_job(api_in_process.calendar_sync)["deleted"] == 1
    assert functions_env.server.events(CALENDAR_ID) == {}


def test_with_calendar_sync_off_a_stuck_deletion_is_still_reported_once(
        functions_env: FunctionsEnv, committed_db: psycopg.Connection, client: Person, session: dict) -> None:
    """Turning sync off must not silence the report: the event is still in the specialist's calendar."""
    queue_by_frontend(functions_env.database_url, client, session["id"])
    committed_db.execute("update private.calendar_deletions set created_at = now() - interval '25 hours'")
    functions_env.set(GOOGLE_SERVICE_ACCOUNT_JSON=None)

    first, second = calendar_sync.run_job(), calendar_sync.run_job()

    assert (first["deleted"], first["stuck_reported"]) == (0, 1)
    assert second["stuck_reported"] == 0, "reported once"
    assert functions_env.server.requests == []
