"""The one error model of the functions.

Domain code raises a narrow subclass of `AppError`; `error_response` is the single
place that turns any exception into the HTTP answer
`{"success": false, "error": CODE, "message": text}`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from collections.abc import Iterable, Mapping

__all__ = [
    "AlreadyCancelled",
    "AppError",
    "BookingInPast",
    "CancellationTooLate",
    "CalendarUnavailable",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RecordingExpired",
    "SlotUnavailable",
    "SlotUnavailableReason",
    "StorageUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_response",
]

SlotUnavailableReason = Literal["outside_hours", "exception", "too_soon", "too_far", "taken"]
SLOT_UNAVAILABLE_REASONS: frozenset[str] = frozenset(
    ("outside_hours", "exception", "too_soon", "too_far", "taken")
)


class AppError(Exception):
    """An error the caller may see: a stable `code`, an HTTP status and a plain message.

    `details` are part of the answer, so only put there what the caller may read.
    """

    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "Something went wrong on our side"

    def __init__(self, message: str | None = None, *, details: Mapping[str, Any] | None = None):
        self.message = message or self.default_message
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers that belong with this error (e.g. `Allow` for 405)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidRequest(AppError):
    code = "INVALID_REQUEST"
    http_status = 400
    default_message = "The request is not valid"


class Unauthorized(AppError):
    code = "UNAUTHORIZED"
    http_status = 401
    default_message = "Sign in to do this"


class Forbidden(AppError):
    code = "FORBIDDEN"
    http_status = 403
    default_message = "You are not allowed to do this"


class NotFound(AppError):
    code = "NOT_FOUND"
    http_status = 404
    default_message = "Not found"


class MethodNotAllowed(AppError):
    code = "METHOD_NOT_ALLOWED"
    http_status = 405

    def __init__(self, method: str | None, allowed: Iterable[str] = ("POST",)):
        self.allowed = tuple(allowed)
        named = f"Method {method}" if method else "This method"
        super().__init__(f"{named} is not allowed here; use {', '.join(self.allowed)}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class PayloadTooLarge(AppError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413
    default_message = "The request body is too large"


class UnsupportedMediaType(AppError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415
    default_message = "Send the request body as application/json"


class AlreadyCancelled(AppError):
    code = "ALREADY_CANCELLED"
    http_status = 409
    default_message = "This session is already cancelled"


class BookingInPast(AppError):
    """The session has already started.

    409, not 422: the request itself is well formed and would succeed for a future
    session; it is refused because of the current state of the resource, exactly
    like ALREADY_CANCELLED, so both answer 409 Conflict.
    """

    code = "BOOKING_IN_PAST"
    http_status = 409
    default_message = "This session has already started or ended"


class SlotUnavailable(AppError):
    """The requested slot cannot be booked; `details["reason"]` says why."""

    code = "SLOT_UNAVAILABLE"
    http_status = 409

    def __init__(self, reason: SlotUnavailableReason, message: str | None = None):
        if reason not in SLOT_UNAVAILABLE_REASONS:
            raise ValueError(f"unknown slot-unavailable reason {reason!r}")
        self.reason = reason
        super().__init__(message or f"This slot cannot be booked ({reason})", details={"reason": reason})


class CancellationTooLate(AppError):
    """A client cancelling inside the minimum notice (CANCELLATION_MIN_NOTICE_HOURS)."""

    code = "CANCELLATION_TOO_LATE"
    http_status = 409
    default_message = "It is too late to cancel this session; please contact your specialist"


class RescheduleTooLate(AppError):
    """A client moving a session inside the minimum notice (CANCELLATION_MIN_NOTICE_HOURS):
    moving it away and cancelling would otherwise bypass that notice."""

    code = "RESCHEDULE_TOO_LATE"
    http_status = 409
    default_message = "It is too late to move this session; please contact your specialist"


class CalendarUnavailable(AppError):
    code = "CALENDAR_UNAVAILABLE"
    http_status = 503
    default_message = "The calendar service is unavailable; try again shortly"


class RecordingExpired(AppError):
    """The recording is past its expires_at (its file is, or is about to be, deleted)."""

    code = "RECORDING_EXPIRED"
    http_status = 410
    default_message = "This recording has expired and is no longer available"


class StorageUnavailable(AppError):
    code = "STORAGE_UNAVAILABLE"
    http_status = 503
    default_message = "The recording storage is unavailable; try again shortly"


class InternalError(AppError):
    """Anything unexpected. Its message is generic on purpose: details go to logs, not callers."""


# Werkzeug raises these itself (e.g. request.get_json() on a malformed body);
# they are mapped to our codes so callers see one error format.
_WERKZEUG_STATUS_TO_ERROR: dict[int, type[AppError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def _as_app_error(err: BaseException) -> AppError:
    if isinstance(err, AppError):
        return err
    try:
        from werkzeug.exceptions import HTTPException
    except ImportError:  # pragma: no cover - werkzeug ships with functions-framework
        HTTPException = ()  # type: ignore[assignment,misc]
    if isinstance(err, HTTPException) and err.code is not None:
        if err.code == 405:
            allowed = getattr(err, "valid_methods", None) or ("POST",)
            return MethodNotAllowed(None, allowed)
        error_class = _WERKZEUG_STATUS_TO_ERROR.get(err.code)
        if error_class is not None:
            return error_class()
    return InternalError()


def error_response(err: BaseException) -> tuple[dict[str, Any], int]:
    """The JSON body and HTTP status for `err`.

    Unexpected exceptions become a generic 500 whose message reveals nothing; the
    caller of this function is expected to log or report the original.
    """
    app_error = _as_app_error(err)
    body: dict[str, Any] = {
        "success": False,
        "error": app_error.code,
        "message": app_error.message,
    }
    if app_error.details:
        body["details"] = app_error.details
    return body, app_error.http_status
