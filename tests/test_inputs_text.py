"""Text fields refuse what PostgreSQL cannot store: a lone surrogate (sent in JSON as
an escape such as \\ud800) is a clear INVALID_REQUEST naming the field, not a 500."""

from __future__ import annotations

import json

import pytest

from shared.errors import InvalidRequest
from shared.inputs import a_text
from tests.functions_fixtures import FunctionClient, bearer
from tests.support import create_person


@pytest.mark.parametrize("value", ["calm \ud800", "\udfff", "a\ud83d"])
def test_a_lone_surrogate_is_refused_naming_the_field(value: str):
    with pytest.raises(InvalidRequest) as refused:
        a_text(100)("reason", value)

    assert (refused.value.message, refused.value.details) == ("Field 'reason' is not valid Unicode text",
                                                              {"field": "reason"})


def test_a_surrogate_pair_is_just_an_emoji():
    assert a_text(10)("reason", json.loads('"\\ud83d\\ude42"')) == "\N{SLIGHTLY SMILING FACE}"


def test_booking_with_a_lone_surrogate_in_its_requests_is_invalid_not_a_server_error(
        booking_api: FunctionClient, bookable_specialist, committed_db):
    specialist = bookable_specialist()
    client = create_person(committed_db, "client")
    body = {"specialist_id": str(specialist.id), "starts_at": specialist.slot().isoformat(),
            "special_requests": "side entrance \ud800"}

    answer = booking_api.request("POST", body=json.dumps(body), headers={"Content-Type": "application/json",
                                                                         **bearer(client)})

    assert (answer.status, answer.json()["error"], answer.json()["details"]) == (
        400, "INVALID_REQUEST", {"field": "special_requests"})
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 0
