"""intake-form: the session's client submits the intake form (encrypted in the
function), the client or the specialist reads it back decrypted, every read is
audited, and anyone else hears NOT_FOUND. Through functions-framework's app and
the served process; committed data (the functions use their own connections).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tests.functions_fixtures import (
    AppClient, BookableSpecialist, FunctionClient, FunctionsEnv, ServedClient, bearer, service_bearer,
)
from tests.intake_support import (
    CONSENTS, answers, audit_rows, form, insert_session, intake_app, read, stored, submit,
)
from tests.support import MISSING, Person, body_with, create_person


@pytest.fixture(scope="module")
def _app() -> Any:
    return intake_app()


@pytest.fixture(params=["app", "served"])
def door(request: pytest.FixtureRequest, functions_env: FunctionsEnv, _app: Any) -> FunctionClient:
    """intake-form through functions-framework's app, and (a second run) through the served process."""
    if request.param == "served":
        return ServedClient(request.getfixturevalue("served_functions").base_url, "intake-form")
    return AppClient(_app)


@pytest.fixture
def app_door(functions_env: FunctionsEnv, _app: Any) -> FunctionClient:
    return AppClient(_app)


@dataclass
class Practice:
    db: psycopg.Connection
    client: Person
    specialist: Person
    other_client: Person
    other_specialist: Person
    admin: Person
    session_id: uuid.UUID

    def session(self, **options: Any) -> uuid.UUID:
        return insert_session(self.db, self.specialist.id, self.client.id, **options)


@pytest.fixture
def practice(committed_db: psycopg.Connection, bookable_specialist) -> Practice:
    specialist: BookableSpecialist = bookable_specialist()
    other_specialist = bookable_specialist(full_name="Dr Other")
    client = create_person(committed_db, "client", full_name="Alice Client")
    other_client = create_person(committed_db, "client", full_name="Bob Client")
    admin = create_person(committed_db, "admin", full_name="Ada Admin")
    # the other pair has a session of its own: a stranger is someone with sessions, just not this one
    insert_session(committed_db, other_specialist.id, other_client.id)
    return Practice(committed_db, client, specialist.person, other_client, other_specialist.person, admin,
                    insert_session(committed_db, specialist.id, client.id))


# -- submitting and reading ---------------------------------------------------------------------

def test_client_submits_and_both_parties_read_the_answers_back(door: FunctionClient, practice: Practice):
    sent = submit(door, practice.client, form(practice.session_id))

    assert sent.status == 200, sent.json()
    assert sent.json()["success"] is True and sent.json()["revision"] == 1
    for who in (practice.client, practice.specialist):
        got = read(door, who, practice.session_id)
        assert got.status == 200, got.json()
        assert got.header("Cache-Control") == "no-store", "decrypted answers are never kept by a cache"
        body = got.json()
        assert body["answers"] == answers()
        assert body["consents"] == CONSENTS
        assert (body["booking_id"], body["revision"]) == (str(practice.session_id), 1)
        assert body["submitted_at"] == sent.json()["submitted_at"]


def test_every_successful_read_writes_one_audit_row_naming_who_which_session_and_when(
        door: FunctionClient, practice: Practice):
    assert submit(door, practice.client, form(practice.session_id)).status == 200
    readers = [practice.client, practice.specialist, practice.specialist]

    for who in readers:
        assert read(door, who, practice.session_id).status == 200

    rows = audit_rows(practice.db, "intake_form_read")
    assert [(r["actor_id"], r["actor_role"], r["entity_type"], r["entity_id"], r["status"]) for r in rows] == [
        (who.id, who.role, "session", practice.session_id, "success") for who in readers]
    assert all(r["created_at"] is not None and r["new_values"] == {"revision": 1} for r in rows)
    submitted = audit_rows(practice.db, "intake_form_submitted")
    assert [(r["actor_id"], r["entity_id"], r["new_values"]) for r in submitted] == [
        (practice.client.id, practice.session_id, {"revision": 1, "key_version": 1})]


def test_only_the_chosen_fields_are_stored_and_null_counts_as_absent(app_door: FunctionClient, practice: Practice):
    partial = {"mental_health": {"severity_level": 3, "previous_therapy": None}, "therapy_goals": None}
    assert submit(app_door, practice.client, form(practice.session_id, answers=partial)).status == 200

    assert read(app_door, practice.client, practice.session_id).json()["answers"] == {
        "mental_health": {"severity_level": 3}}


def test_submitting_again_replaces_the_answers_and_discards_the_old_version(
        app_door: FunctionClient, practice: Practice):
    assert submit(app_door, practice.client, form(practice.session_id, marker="first")).status == 200
    before = stored(practice.db)[0]

    again = submit(app_door, practice.client, form(practice.session_id, answers={"therapy_goals": {"goals": ["b"]}}))

    assert (again.status, again.json()["revision"]) == (200, 2)
    rows = stored(practice.db)
    assert len(rows) == 1 and rows[0]["id"] == before["id"]
    assert rows[0]["nonce"] != before["nonce"] and rows[0]["ciphertext"] != before["ciphertext"]
    assert rows[0]["submitted_at"] >= before["submitted_at"]
    assert read(app_door, practice.client, practice.session_id).json()["answers"] == {"therapy_goals": {"goals": ["b"]}}


def test_equal_answers_never_give_equal_ciphertexts(app_door: FunctionClient, practice: Practice):
    second = practice.session(starts_in=timedelta(days=4))
    for session_id in (practice.session_id, second):
        assert submit(app_door, practice.client, form(session_id)).status == 200

    first_row, second_row = stored(practice.db)
    assert first_row["nonce"] != second_row["nonce"]
    assert first_row["ciphertext"] != second_row["ciphertext"]
    assert len(first_row["ciphertext"]) % 256 == 16, "padded to 256-byte blocks, plus the 16-byte tag"


def test_a_form_is_frozen_once_its_session_has_started(app_door: FunctionClient, practice: Practice):
    started = practice.session(starts_in=timedelta(minutes=-10))

    answer = submit(app_door, practice.client, form(started))

    assert (answer.status, answer.json()["error"]) == (409, "BOOKING_IN_PAST")
    assert stored(practice.db) == []


def test_a_cancelled_session_takes_no_form(app_door: FunctionClient, practice: Practice):
    practice.db.execute("insert into public.booking_cancellations (booking_id, cancelled_by, reason) "
                        "values (%s, %s, 'away')", [practice.session_id, practice.client.id])

    answer = submit(app_door, practice.client, form(practice.session_id))

    assert (answer.status, answer.json()["error"]) == (409, "ALREADY_CANCELLED")
    assert stored(practice.db) == []


def test_reading_before_anything_was_submitted_is_not_found(app_door: FunctionClient, practice: Practice):
    answer = read(app_door, practice.specialist, practice.session_id)

    assert (answer.status, answer.json()["error"]) == (404, "NOT_FOUND")
    assert audit_rows(practice.db, "intake_form_read") == []


# -- who may ----------------------------------------------------------------------------------------

READERS = {
    # who: (status, error) of a GET of the client's form
    "client": (200, None),
    "specialist": (200, None),
    "other_client": (404, "NOT_FOUND"),
    "other_specialist": (404, "NOT_FOUND"),
    "admin": (404, "NOT_FOUND"),
    "anon": (401, "UNAUTHORIZED"),
    "anon_key": (401, "UNAUTHORIZED"),
    "anonymous_sign_in": (403, "FORBIDDEN"),
}


def _call(practice: Practice, who: str, act) -> Any:
    if who == "anon":
        return act(None, {})
    if who == "anon_key":
        return act(None, service_bearer(role="anon"))
    if who == "anonymous_sign_in":
        return act(practice.client, {"is_anonymous": True})
    return act(getattr(practice, who), {})


@pytest.mark.parametrize("who", list(READERS))
def test_who_may_read_a_form_and_every_read_is_audited(who: str, door: FunctionClient, practice: Practice):
    assert submit(door, practice.client, form(practice.session_id)).status == 200

    def act(person, extra):
        if person is None:
            return door.request("GET", query=f"booking_id={practice.session_id}", headers=extra)
        return read(door, person, practice.session_id, **extra)

    answer = _call(practice, who, act)

    status, error = READERS[who]
    assert answer.status == status, answer.json()
    reads = audit_rows(practice.db, "intake_form_read")
    if error is None:
        assert answer.json()["answers"] == answers()
        assert [r["actor_id"] for r in reads] == [getattr(practice, who).id]
    else:
        assert answer.json()["error"] == error
        assert "answers" not in answer.json() and "Maria" not in answer.text
        assert reads == [], "a refused read is not an access"


SUBMITTERS = {
    "client": (200, None),
    "specialist": (404, "NOT_FOUND"),
    "other_client": (404, "NOT_FOUND"),
    "other_specialist": (404, "NOT_FOUND"),
    "admin": (404, "NOT_FOUND"),
    "anon": (401, "UNAUTHORIZED"),
    "anon_key": (401, "UNAUTHORIZED"),
    "anonymous_sign_in": (403, "FORBIDDEN"),
}


@pytest.mark.parametrize("who", list(SUBMITTERS))
def test_only_the_sessions_client_submits(who: str, door: FunctionClient, practice: Practice):
    def act(person, extra):
        if person is None:
            return door.post_json(form(practice.session_id), headers=extra)
        return submit(door, person, form(practice.session_id), **extra)

    answer = _call(practice, who, act)

    status, error = SUBMITTERS[who]
    assert answer.status == status, answer.json()
    if error is None:
        assert len(stored(practice.db)) == 1
    else:
        assert answer.json()["error"] == error
        assert stored(practice.db) == [] and audit_rows(practice.db, "intake_form_submitted") == []


def test_a_stranger_hears_the_same_as_for_a_session_that_does_not_exist(app_door: FunctionClient, practice: Practice):
    assert submit(app_door, practice.client, form(practice.session_id)).status == 200

    strangers = read(app_door, practice.other_client, practice.session_id).json()
    missing = read(app_door, practice.other_client, uuid.UUID(int=7)).json()

    assert strangers["error"] == missing["error"] == "NOT_FOUND"
    assert strangers["message"].replace(str(practice.session_id), "X") == missing["message"].replace(
        str(uuid.UUID(int=7)), "X")


# -- bad input --------------------------------------------------------------------------------------

def _answers_with(section: str, field: str, value: Any) -> dict[str, Any]:
    changed = answers()
    changed[section][field] = value
    return changed


BAD_INPUT = {
    # case: (body changes, status, code, details.field)
    "missing consent": ({"consents": {"treatment": True, "confidentiality": True}}, 400, "INVALID_REQUEST",
                        "consents.data_processing"),
    "consent refused": ({"consents": {**CONSENTS, "treatment": False}}, 400, "INVALID_REQUEST", "consents.treatment"),
    "consent as a string": ({"consents": {**CONSENTS, "confidentiality": "yes"}}, 400, "INVALID_REQUEST",
                            "consents.confidentiality"),
    "no consents at all": ({"consents": MISSING}, 400, "INVALID_REQUEST", "consents"),
    "unknown consent": ({"consents": {**CONSENTS, "marketing": True}}, 400, "INVALID_REQUEST", "consents.marketing"),
    "severity 11": ({"answers": _answers_with("mental_health", "severity_level", 11)}, 400, "INVALID_REQUEST",
                    "answers.mental_health.severity_level"),
    "severity 0": ({"answers": _answers_with("mental_health", "severity_level", 0)}, 400, "INVALID_REQUEST",
                   "answers.mental_health.severity_level"),
    "severity as text": ({"answers": _answers_with("mental_health", "severity_level", "7")}, 400,
                         "INVALID_REQUEST", "answers.mental_health.severity_level"),
    "severity 7.5": ({"answers": _answers_with("mental_health", "severity_level", 7.5)}, 400, "INVALID_REQUEST",
                     "answers.mental_health.severity_level"),
    "previous therapy as a number": ({"answers": _answers_with("mental_health", "previous_therapy", 1)}, 400,
                                     "INVALID_REQUEST", "answers.mental_health.previous_therapy"),
    "unknown field": ({"answers": _answers_with("personal_info", "blood_type", "0+")}, 400, "INVALID_REQUEST",
                      "answers.personal_info.blood_type"),
    "unknown section": ({"answers": {**answers(), "payment": {}}}, 400, "INVALID_REQUEST", "answers.payment"),
    "unknown top-level field": ({"notes": "x"}, 400, "INVALID_REQUEST", "notes"),
    "100 KB answer": ({"answers": _answers_with("personal_info", "medical_history", "x" * 100_000)}, 413,
                      "PAYLOAD_TOO_LARGE", None),
    "an answer over its length": ({"answers": _answers_with("personal_info", "medical_history", "x" * 5001)}, 400,
                                  "INVALID_REQUEST", "answers.personal_info.medical_history"),
    "too many symptoms": ({"answers": _answers_with("mental_health", "current_symptoms", ["a"] * 31)}, 400,
                          "INVALID_REQUEST", "answers.mental_health.current_symptoms"),
    "a symptom that is not text": ({"answers": _answers_with("mental_health", "current_symptoms", ["a", 3])}, 400,
                                   "INVALID_REQUEST", "answers.mental_health.current_symptoms[1]"),
    "NUL": ({"answers": _answers_with("personal_info", "allergies", "nuts\x00and more")}, 400, "INVALID_REQUEST",
            "answers.personal_info.allergies"),
    "NUL in a list": ({"answers": _answers_with("therapy_goals", "goals", ["a\x00"])}, 400, "INVALID_REQUEST",
                      "answers.therapy_goals.goals[0]"),
    "lone surrogate": ({"answers": _answers_with("therapy_goals", "expectations", "calm \ud800")}, 400,
                       "INVALID_REQUEST", "answers.therapy_goals.expectations"),
    "answers not an object": ({"answers": ["yes"]}, 400, "INVALID_REQUEST", "answers"),
    "section not an object": ({"answers": {"personal_info": "fine"}}, 400, "INVALID_REQUEST",
                              "answers.personal_info"),
    "no answers": ({"answers": MISSING}, 400, "INVALID_REQUEST", "answers"),
    "booking id not a uuid": ({"booking_id": "BK-2026-1"}, 400, "INVALID_REQUEST", "booking_id"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_with_its_code_and_nothing_is_stored(case: str, door: FunctionClient,
                                                                 practice: Practice):
    changes, status, code, field = BAD_INPUT[case]
    body = body_with(form(practice.session_id), **changes)
    # json.dumps writes a lone surrogate as the escape \ud800, which is how it reaches a function
    answer = door.request("POST", body=json.dumps(body), headers={
        "Content-Type": "application/json", **_bearer(practice.client)})

    assert (answer.status, answer.json()["error"]) == (status, code), answer.json()
    assert answer.json().get("details", {}).get("field") == field
    assert stored(practice.db) == []
    assert audit_rows(practice.db, "intake_form_submitted") == []


def _bearer(person: Person) -> dict[str, str]:
    return bearer(person)


READ_QUERIES = {
    "no booking_id": ("", "booking_id"),
    "booking_id not a uuid": ("booking_id=12", "booking_id"),
    "booking_id twice": ("booking_id={id}&booking_id={id}", "booking_id"),
    "an unknown parameter": ("booking_id={id}&client_id={id}", "client_id"),
}


@pytest.mark.parametrize("case", list(READ_QUERIES))
def test_a_bad_query_is_refused_and_nothing_is_audited(case: str, door: FunctionClient, practice: Practice):
    assert submit(door, practice.client, form(practice.session_id)).status == 200
    query, field = READ_QUERIES[case]

    answer = door.request("GET", query=query.format(id=practice.session_id), headers=_bearer(practice.client))

    assert (answer.status, answer.json()["error"], answer.json()["details"]) == (
        400, "INVALID_REQUEST", {"field": field})
    assert audit_rows(practice.db, "intake_form_read") == []


def test_put_answers_405_allowing_get_and_post(app_door: FunctionClient, practice: Practice):
    answer = app_door.request("PUT", body="{}", headers={"Content-Type": "application/json"})

    assert (answer.status, answer.json()["error"]) == (405, "METHOD_NOT_ALLOWED")
    assert answer.header("Allow") == "GET, POST"
