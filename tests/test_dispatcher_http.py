"""recurring-dispatcher over HTTP: only the service key may run it, through
functions-framework's app and through the served process alike; what it answers;
and two calls at the same moment creating every session exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.dispatcher_support import add_recurrence, specialist_with_rate
from tests.functions_fixtures import (
    AppClient, FunctionClient, FunctionsEnv, ServedClient, ServedFunctions, _create_app, service_token, user_token,
)
from tests.support import create_person

FUNCTION = "recurring-dispatcher"


@pytest.fixture(scope="module")
def _dispatcher_flask_app() -> Any:
    return _create_app(FUNCTION, "recurring_dispatcher")


@pytest.fixture(params=["app", "served"])
def dispatcher_api(request: pytest.FixtureRequest, functions_env: FunctionsEnv) -> FunctionClient:
    """recurring-dispatcher through functions-framework's app, then through the served process."""
    if request.param == "served":
        served: ServedFunctions = request.getfixturevalue("served_functions")
        return ServedClient(served.base_url, FUNCTION)
    return AppClient(request.getfixturevalue("_dispatcher_flask_app"))


def due_recurrences(conn: psycopg.Connection, count: int) -> list:
    """`count` weekly recurrences (10:00 UTC, two days from now), each with its own specialist and client:
    a dispatch now creates exactly one session for each."""
    return [add_recurrence(conn, create_person(conn, "client"), specialist_with_rate(conn, zone="UTC"),
                           start_date=conn.execute("select current_date + 2 as d").fetchone()["d"], zone="UTC")
            for _ in range(count)]


def written(conn: psycopg.Connection) -> dict[str, int]:
    return conn.execute(
        """select (select count(*) from public.sessions) as sessions,
                  (select count(*) from public.audit_log where action = 'recurring_bookings_dispatched') as audits,
                  (select count(*) from public.recurring_bookings where next_booking_date <= current_date + 7)
                    as still_due""").fetchone()


def as_service(**token_options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {service_token(**token_options)}"}


# Each caller that must be refused, as a function of (client, specialist) → headers.
REFUSED: dict[str, Callable[..., dict[str, str]]] = {
    "no Authorization header": lambda client, specialist: {},
    "a client's JWT": lambda client, specialist: {"Authorization": f"Bearer {user_token(client)}"},
    "a specialist's JWT": lambda client, specialist: {"Authorization": f"Bearer {user_token(specialist)}"},
    "the anon key": lambda client, specialist: as_service(role="anon"),
    "service_role forged with the wrong key": lambda client, specialist: as_service(
        secret="not-the-project-secret-but-long-enough-0123456789abcdef"),
    "an expired service key": lambda client, specialist: as_service(expires_in=-3600),
}


@pytest.mark.parametrize("caller", REFUSED.values(), ids=list(REFUSED))
def test_callers_without_the_service_key_get_401_and_nothing_is_dispatched(
        dispatcher_api: FunctionClient, committed_db, caller):
    due_recurrences(committed_db, 2)
    client, specialist = create_person(committed_db, "client"), create_person(committed_db, "specialist")

    answer = dispatcher_api.post_json({}, headers=caller(client, specialist))

    assert answer.status == 401
    assert answer.json()["success"] is False and answer.json()["error"] == "UNAUTHORIZED"
    assert written(committed_db) == {"sessions": 0, "audits": 0, "still_due": 2}


def test_service_key_dispatches_and_answers_in_the_seed_shape(dispatcher_api: FunctionClient, committed_db,
                                                              functions_env: FunctionsEnv):
    due_recurrences(committed_db, 3)

    answer = dispatcher_api.post_json({}, headers=as_service())

    assert answer.status == 200
    body = answer.json()
    assert {k: body[k] for k in ("success", "message", "count", "errors", "dry_run")} == {
        "success": True, "message": "Dispatched 3 recurring bookings", "count": 3, "errors": [], "dry_run": False}
    made = committed_db.execute("select id::text as id from public.sessions").fetchall()
    assert sorted(body["bookings"]) == sorted(r["id"] for r in made)
    assert written(committed_db) == {"sessions": 3, "audits": 1, "still_due": 0}
    assert len(functions_env.server.events("primary")) == 3, "each session got its calendar event"


def test_empty_body_works_as_the_scheduler_sends_it(dispatcher_api: FunctionClient, committed_db):
    due_recurrences(committed_db, 1)

    answer = dispatcher_api.request("POST", headers=as_service())

    assert (answer.status, answer.json()["count"]) == (200, 1)


def test_dry_run_over_http_reports_the_count_and_writes_nothing(dispatcher_api: FunctionClient, committed_db):
    due_recurrences(committed_db, 4)

    answer = dispatcher_api.post_json({"dry_run": True}, headers=as_service())

    assert answer.status == 200
    assert (answer.json()["count"], answer.json()["dry_run"]) == (4, True)
    assert written(committed_db) == {"sessions": 0, "audits": 0, "still_due": 4}


BAD_BODIES = {
    "dry_run not a boolean": ({"dry_run": "yes"}, "dry_run"),
    "horizon beyond 60 days": ({"horizon_days": 61}, "horizon_days"),
    "negative horizon": ({"horizon_days": -1}, "horizon_days"),
    "unknown field": ({"dryrun": True}, "dryrun"),
}


@pytest.mark.parametrize(("body", "field"), BAD_BODIES.values(), ids=list(BAD_BODIES))
def test_bad_body_gets_400_and_changes_nothing(dispatcher_api: FunctionClient, committed_db, body, field):
    due_recurrences(committed_db, 1)

    answer = dispatcher_api.post_json(body, headers=as_service())

    assert answer.status == 400
    assert answer.json()["error"] == "INVALID_REQUEST" and field in answer.json()["message"]
    assert written(committed_db) == {"sessions": 0, "audits": 0, "still_due": 1}


def test_get_is_not_allowed(dispatcher_api: FunctionClient, committed_db):
    answer = dispatcher_api.request("GET", headers=as_service())

    assert answer.status == 405


def test_two_calls_at_the_same_moment_create_each_session_exactly_once(
        served_functions: ServedFunctions, functions_env: FunctionsEnv, committed_db):
    due_recurrences(committed_db, 20)
    api = ServedClient(served_functions.base_url, FUNCTION)
    barrier = threading.Barrier(2, timeout=30)
    answers: list = [None, None]

    def call(i: int) -> None:
        barrier.wait()
        answers[i] = api.post_json({}, headers=as_service())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [a.status for a in answers] == [200, 200]
    assert sorted(a.json()["count"] for a in answers) == [0, 20]
    duplicates = committed_db.execute(
        """select count(*) as n from (select 1 from public.sessions
           group by recurring_booking_id, occurrence_date having count(*) > 1) d""").fetchone()["n"]
    assert duplicates == 0
    assert written(committed_db) == {"sessions": 20, "audits": 2, "still_due": 0}
