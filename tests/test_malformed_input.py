"""Malformed input is the caller's mistake, never our error: a JWT header whose `kid` is
not a string, an integer literal longer than Python converts (4,300 digits), half a
UTF-16 surrogate pair in a text field — each answers 4xx with a clear message, changes
nothing, and sends Sentry no event (only a breadcrumb).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import jwt
import pytest

from tests.functions_fixtures import JWT_SECRET, FunctionsApi, _create_app, bearer, service_token
from tests.support import Person, create_person
from tests.test_sentry import CaptureTransport, sentry  # noqa: F401 - the fixture

JSON = {"Content-Type": "application/json"}
HUGE_INTEGER = "9" * 5000


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_with_header(header: dict[str, Any] | bytes, payload: dict[str, Any] | None = None) -> str:
    """A JWT with this exact header, signed with the project secret (the signature is not the point)."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{_segment(raw_header)}.{_segment(json.dumps(payload or {'sub': str(uuid.uuid4())}).encode())}"
    signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(signing_input.encode(), JWT_SECRET.encode())
    return f"{signing_input}.{_segment(signature)}"


MALFORMED_TOKENS = {
    "kid a number": lambda: token_with_header({"alg": "HS256", "typ": "JWT", "kid": 123}),
    "kid an object": lambda: token_with_header({"alg": "HS256", "typ": "JWT", "kid": {"id": "x"}}),
    "kid a list": lambda: token_with_header({"alg": "ES256", "typ": "JWT", "kid": ["a"]}),
    "huge integer in the header": lambda: token_with_header(b'{"alg": "HS256", "n": ' + HUGE_INTEGER.encode() + b"}"),
    "huge integer in the payload": lambda: _huge_payload_token(),
    "lone surrogate as kid": lambda: token_with_header(b'{"alg": "HS256", "kid": "\\ud800"}'),
}


def _huge_payload_token() -> str:
    header = _segment(b'{"alg": "HS256", "typ": "JWT"}')
    payload = _segment(b'{"sub": ' + HUGE_INTEGER.encode() + b', "aud": "authenticated", "exp": 9999999999}')
    signature = jwt.api_jws.get_algorithm_by_name("HS256").sign(f"{header}.{payload}".encode(), JWT_SECRET.encode())
    return f"{header}.{payload}.{_segment(signature)}"


@pytest.mark.parametrize("function", ["booking_create", "booking_cancel", "calendar_sync", "booking_reschedule"])
@pytest.mark.parametrize("malformed", list(MALFORMED_TOKENS))
def test_a_malformed_token_is_refused_without_a_sentry_event(
        malformed: str, function: str, configured_functions_api, sentry: CaptureTransport) -> None:  # noqa: F811
    api: FunctionsApi = configured_functions_api("app")

    answer = getattr(api, function).request(
        "POST", body="{}", headers={**JSON, "Authorization": f"Bearer {MALFORMED_TOKENS[malformed]()}"})

    assert answer.status == 401, answer.body[:300]
    assert answer.json()["error"] == "UNAUTHORIZED" and answer.json()["message"]
    assert sentry.events == []


def test_a_kid_that_is_not_a_string_names_the_problem(configured_functions_api) -> None:
    api: FunctionsApi = configured_functions_api("app")
    token = token_with_header({"alg": "HS256", "typ": "JWT", "kid": 123})

    answer = api.booking_create.request("POST", body="{}", headers={**JSON, "Authorization": f"Bearer {token}"})

    assert answer.json()["message"] == "Token header is malformed (Key ID header parameter must be a string)"


BOOKING_BODIES = {
    "huge integer": ('{"specialist_id": "%s", "starts_at": "2030-01-01T10:00:00+00:00", "duration_minutes": '
                     + HUGE_INTEGER + "}",
                     "The request body holds a number too long to read (over 4300 digits)"),
    "lone surrogate in a text field": (
        '{"specialist_id": "%s", "starts_at": "2030-01-01T10:00:00+00:00", "special_requests": "a\\ud800b"}',
        "Field 'special_requests' is not valid Unicode text"),
    "lone low surrogate as a field name": (
        '{"specialist_id": "%s", "starts_at": "2030-01-01T10:00:00+00:00", "\\udfff": 1}',
        "Unknown field '\\udfff'"),
}


@pytest.mark.parametrize("case", list(BOOKING_BODIES))
def test_a_malformed_booking_body_is_a_400_without_a_sentry_event(
        case: str, configured_functions_api, committed_db, sentry: CaptureTransport) -> None:  # noqa: F811
    api: FunctionsApi = configured_functions_api("app")
    client: Person = create_person(committed_db, "client")
    template, message = BOOKING_BODIES[case]

    answer = api.booking_create.request("POST", body=template % uuid.uuid4(), headers={**JSON, **bearer(client)})

    assert (answer.status, answer.json()["error"], answer.json()["message"]) == (400, "INVALID_REQUEST", message)
    assert sentry.events == []
    assert committed_db.execute("select count(*) as n from public.sessions").fetchone()["n"] == 0


@pytest.mark.parametrize("body", ['{"booking_id": "%s", "reason": "\\udc00"}', '{"booking_id": "%s", "x": ' +
                                  HUGE_INTEGER + "}"], ids=["lone surrogate", "huge integer"])
def test_a_malformed_cancel_body_is_a_400_without_a_sentry_event(
        body: str, configured_functions_api, committed_db, sentry: CaptureTransport) -> None:  # noqa: F811
    api: FunctionsApi = configured_functions_api("app")
    client: Person = create_person(committed_db, "client")

    answer = api.booking_cancel.request("POST", body=body % uuid.uuid4(), headers={**JSON, **bearer(client)})

    assert (answer.status, answer.json()["error"]) == (400, "INVALID_REQUEST")
    assert sentry.events == []


def test_the_dispatcher_refuses_a_huge_integer_without_a_sentry_event(
        configured_functions_api, sentry: CaptureTransport) -> None:  # noqa: F811
    configured_functions_api("app")  # the settings of this process
    app = _create_app("recurring-dispatcher", "recurring_dispatcher").test_client()

    answer = app.post("/", data='{"horizon_days": ' + HUGE_INTEGER + "}",
                      headers={**JSON, "Authorization": f"Bearer {service_token()}"})

    assert answer.status_code == 400 and answer.get_json()["error"] == "INVALID_REQUEST"
    assert sentry.events == []
