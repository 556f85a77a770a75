"""The error model: every error answers {"success": false, "error": CODE, "message": text}."""

from __future__ import annotations

import pytest
from werkzeug import exceptions as werkzeug_errors

from shared import errors
from shared.errors import error_response


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (errors.InvalidRequest("booking_id is missing"), "INVALID_REQUEST", 400),
        (errors.Unauthorized(), "UNAUTHORIZED", 401),
        (errors.Forbidden(), "FORBIDDEN", 403),
        (errors.NotFound("No session 42"), "NOT_FOUND", 404),
        (errors.MethodNotAllowed("GET"), "METHOD_NOT_ALLOWED", 405),
        (errors.PayloadTooLarge(), "PAYLOAD_TOO_LARGE", 413),
        (errors.UnsupportedMediaType(), "UNSUPPORTED_MEDIA_TYPE", 415),
        (errors.AlreadyCancelled(), "ALREADY_CANCELLED", 409),
        (errors.BookingInPast(), "BOOKING_IN_PAST", 409),
        (errors.SlotUnavailable("taken"), "SLOT_UNAVAILABLE", 409),
        (errors.CalendarUnavailable(), "CALENDAR_UNAVAILABLE", 503),
    ],
)
def test_each_error_has_its_code_and_status(error: errors.AppError, code: str, status: int) -> None:
    body, http_status = error_response(error)
    assert (body["success"], body["error"], http_status) == (False, code, status)
    assert body["message"] == error.message and body["message"]


def test_message_names_the_offending_value() -> None:
    body, _ = error_response(errors.InvalidRequest("booking_id 'abc' is not a UUID"))
    assert body == {"success": False, "error": "INVALID_REQUEST", "message": "booking_id 'abc' is not a UUID"}


def test_slot_unavailable_says_why() -> None:
    body, status = error_response(errors.SlotUnavailable("too_soon", "Book at least 24 hours ahead"))
    assert status == 409
    assert body["details"] == {"reason": "too_soon"}
    assert body["message"] == "Book at least 24 hours ahead"


def test_slot_unavailable_rejects_an_unknown_reason() -> None:
    with pytest.raises(ValueError, match="'busy'"):
        errors.SlotUnavailable("busy")  # type: ignore[arg-type]


def test_method_not_allowed_lists_allowed_methods() -> None:
    error = errors.MethodNotAllowed("GET", ["POST", "OPTIONS"])
    assert error.headers == {"Allow": "POST, OPTIONS"}
    assert error.message == "Method GET is not allowed here; use POST, OPTIONS"


def test_unexpected_exception_becomes_a_generic_500_that_leaks_nothing() -> None:
    body, status = error_response(KeyError("password=hunter2"))
    assert status == 500
    assert body == {"success": False, "error": "INTERNAL_ERROR", "message": "Something went wrong on our side"}


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (werkzeug_errors.BadRequest(), "INVALID_REQUEST", 400),
        (werkzeug_errors.MethodNotAllowed(valid_methods=["POST"]), "METHOD_NOT_ALLOWED", 405),
        (werkzeug_errors.RequestEntityTooLarge(), "PAYLOAD_TOO_LARGE", 413),
        (werkzeug_errors.UnsupportedMediaType(), "UNSUPPORTED_MEDIA_TYPE", 415),
    ],
)
def test_framework_errors_use_our_format(error: Exception, code: str, status: int) -> None:
    body, http_status = error_response(error)
    assert (body["error"], http_status) == (code, status)
