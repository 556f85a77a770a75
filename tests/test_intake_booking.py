"""booking-create's optional `intake` (seed 001 sends the form with the booking):
stored encrypted in the booking's own transaction, and not at all when the
booking is refused. Through both doors of booking-create."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.functions_fixtures import AppClient, BookableSpecialist, FunctionClient, FunctionsEnv, bearer
from tests.intake_support import CONSENTS, answers, audit_rows, intake_app, read, stored
from tests.support import Person, create_person


@pytest.fixture
def client(committed_db: psycopg.Connection) -> Person:
    return create_person(committed_db, "client", full_name="Alice Client")


@pytest.fixture
def specialist(bookable_specialist) -> BookableSpecialist:
    return bookable_specialist()


def booking(specialist: BookableSpecialist, days_ahead: int = 3, **fields) -> dict:
    return {"specialist_id": str(specialist.id), "starts_at": specialist.slot(days_ahead=days_ahead).isoformat(),
            **fields}


INTAKE = {"answers": answers("with the booking"), "consents": CONSENTS}


def sessions(db: psycopg.Connection) -> list[dict]:
    return db.execute("select id from public.sessions").fetchall()


def test_a_booking_with_its_intake_stores_both_and_the_form_reads_back(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist):
    answer = booking_api.post_json(booking(specialist, intake=INTAKE), headers=bearer(client))

    assert answer.status == 200, answer.json()
    session_id = uuid.UUID(answer.json()["session_id"])
    (row,) = stored(committed_db)
    assert (row["booking_id"], row["client_id"], row["revision"]) == (session_id, client.id, 1)
    got = read(AppClient(intake_app()), specialist.person, session_id).json()
    assert (got["answers"], got["consents"]) == (INTAKE["answers"], CONSENTS)
    assert [r["entity_id"] for r in audit_rows(committed_db, "intake_form_submitted")] == [session_id]


def test_a_booking_without_intake_stores_no_form(booking_api: FunctionClient, committed_db: psycopg.Connection,
                                                  client: Person, specialist: BookableSpecialist):
    assert booking_api.post_json(booking(specialist), headers=bearer(client)).status == 200

    assert stored(committed_db) == []


def test_a_refused_booking_stores_no_form(booking_api: FunctionClient, committed_db: psycopg.Connection,
                                         client: Person, specialist: BookableSpecialist):
    first = booking_api.post_json(booking(specialist), headers=bearer(client))
    assert first.status == 200

    again = booking_api.post_json(booking(specialist, intake=INTAKE), headers=bearer(client))  # the same slot

    assert (again.status, again.json()["error"]) == (409, "SLOT_UNAVAILABLE")
    assert stored(committed_db) == [] and len(sessions(committed_db)) == 1


def test_a_calendar_outage_stores_neither_session_nor_form(
        booking_api: FunctionClient, functions_env: FunctionsEnv, committed_db: psycopg.Connection,
        client: Person, specialist: BookableSpecialist):
    functions_env.server.fail(500, times=None, method="POST")

    answer = booking_api.post_json(booking(specialist, intake=INTAKE), headers=bearer(client))

    assert (answer.status, answer.json()["error"]) == (503, "CALENDAR_UNAVAILABLE")
    assert stored(committed_db) == [] and sessions(committed_db) == []
    assert audit_rows(committed_db, "intake_form_submitted") == []


@pytest.mark.parametrize("intake, field", [
    ({"answers": answers(), "consents": {**CONSENTS, "treatment": False}}, "intake.consents.treatment"),
    ({"answers": answers()}, "intake.consents"),
    ({"answers": {"mental_health": {"severity_level": 11}}, "consents": CONSENTS},
     "intake.answers.mental_health.severity_level"),
    ({**INTAKE, "signature": "A. Client"}, "intake.signature"),
    ("yes", "intake"),
])
def test_a_bad_intake_refuses_the_whole_booking(intake, field: str, booking_api: FunctionClient,
                                                committed_db: psycopg.Connection, client: Person,
                                                specialist: BookableSpecialist):
    answer = booking_api.post_json(booking(specialist, intake=intake), headers=bearer(client))

    assert (answer.status, answer.json()["error"], answer.json()["details"]) == (
        400, "INVALID_REQUEST", {"field": field})
    assert sessions(committed_db) == [] and stored(committed_db) == []
