"""The OpenAPI 3.1 description of the functions, served locally at
``/functions/v1/openapi.json`` (shared/ops/serve.py).

Limits, enumerations and error codes are read from the code that enforces them
(shared.inputs, shared.errors, shared.booking, ...), so the document cannot drift
from them; tests/test_openapi.py and tests/test_fuzz.py compare the rest with
what the functions actually answer.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from shared.booking import SESSION_TYPES
from shared.booking_cancel import MAX_REASON_LENGTH, SUCCESS_MESSAGE
from shared.errors import (
    SLOT_UNAVAILABLE_REASONS, AlreadyCancelled, AppError, BookingInPast, CalendarUnavailable, CancellationTooLate,
    Forbidden, InternalError, InvalidRequest, NotFound, PayloadTooLarge, RecordingExpired, RescheduleTooLate,
    SlotUnavailable, StorageUnavailable, Unauthorized, UnsupportedMediaType,
)
from shared.inputs import MAX_BODY_BYTES, MOMENT_YEARS
from shared.rescheduling import api as reschedule_api
from shared.ops import intake_openapi
from shared.ops.demo import SPECIALIST_ID as DEMO_SPECIALIST_ID
from shared.storage.links import MAX_LINK_SECONDS

OPENAPI_VERSION = "3.1.0"
LOCAL_SERVER = "http://127.0.0.1:8000/functions/v1"
USER_SECURITY = [{"userToken": []}]
SERVICE_SECURITY = [{"serviceKey": []}, {"secretKey": []}]

# The document's introduction: what holds for every function.
DESCRIPTION = f"""\
The booking functions of the therapy platform. Locally (`therapy-db up`) they are served together at
`/functions/v1/<name>`, as on Supabase; deployed (`therapy-db deploy`), each is a Cloud Function at
`https://<region>-<project>.cloudfunctions.net/<name>`.

**Errors.** JSON functions answer every error as `{{"success": false, "error": CODE, "message": text}}`
(plus `details` for some codes: `field` names the refused request field, `reason` says why a slot
cannot be booked). The codes each operation can answer are listed with its responses.

**Authentication.** `Authorization: Bearer <JWT>`. User functions take a signed-in user's Supabase
access token (HS256 with the project's JWT secret, or ES256/RS256 from the project's JWKS; `aud`
must be `authenticated`; the caller's role comes from their profile, never from the token).
Service functions take the project's service key (HS256, `role: service_role`), as pg_cron sends it,
or Supabase's secret API key in the `apikey` header (`sb_secret_…`, not a JWT; never as a Bearer token).

**Requests.** JSON bodies must be sent as `application/json`, at most {MAX_BODY_BYTES} bytes, and hold
exactly the documented fields: unknown fields are refused (`INVALID_REQUEST`), and a field sent as
`null` counts as absent. Times need a UTC offset (`Z` or `±hh:mm`), in the years shown, without leap
seconds; whole numbers are written as integers (`50`, not `50.0`).

**Methods.** A method an operation does not list answers 405 with an `Allow` header
(`METHOD_NOT_ALLOWED` for the JSON functions, a page for `token-cancel`). The JSON functions answer
CORS preflights (`OPTIONS`) with 204.
"""


def _app_version() -> str:
    try:
        return metadata.version("therapy-booking-backend")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


# -- building blocks --------------------------------------------------------------------

def _error_schema(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "error", "message"],
        "additionalProperties": False,
        "properties": {
            "success": {"const": False},
            "error": {"enum": codes},
            "message": {"type": "string", "minLength": 1},
            "details": {"$ref": "#/components/schemas/ErrorDetails"},
        },
    }


def _errors(*errors: tuple[type[AppError], str]) -> dict[str, Any]:
    """Responses for the given errors, grouped by their HTTP status (read from the error classes)."""
    by_status: dict[int, list[tuple[str, str]]] = {}
    for error, meaning in errors:
        by_status.setdefault(error.http_status, []).append((error.code, meaning))
    responses = {}
    for status, entries in sorted(by_status.items()):
        responses[str(status)] = {
            "description": "; ".join(f"`{code}`: {meaning}" for code, meaning in entries),
            "content": {"application/json": {"schema": _error_schema([code for code, _ in entries])}},
        }
    return responses


def _ok(description: str, schema_ref: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}}


def _json_body(schema_ref: str, example: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"},
                                         "example": example}},
    }


def _bookable_example_time() -> str:
    """Three days from today at 10:00 in London (inside the demo specialist's hours, past the
    default notice, before the default horizon): an example that books when sent."""
    from datetime import datetime, time, timedelta
    from zoneinfo import ZoneInfo

    london = ZoneInfo("Europe/London")
    day = datetime.now(london).date() + timedelta(days=3)
    return datetime.combine(day, time(10), london).isoformat()


def _page(meaning: str) -> dict[str, Any]:
    return {"description": meaning, "content": {"text/html": {"schema": {"type": "string"}}}}


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or null (an optional field sent as null counts as absent)."""
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return {**schema, "type": [schema["type"], "null"]}


# Text fields: at most `length` characters once surrounding whitespace is trimmed (the
# functions trim before measuring), and no NUL character (PostgreSQL text cannot hold it).
def _trimmed_text(length: int, *, required_content: bool = False) -> dict[str, Any]:
    content = rf"[^\s\x00](?:[^\x00]{{0,{length - 2}}}[^\s\x00])?"
    return {"type": "string", "pattern": rf"^\s*{content if required_content else f'(?:{content})?'}\s*$"}


UNAUTHORIZED_USER = (Unauthorized, "no token, or an invalid, expired or non-user token, or no profile")
UNAUTHORIZED_SERVICE = (Unauthorized, "no token, or not the service key")
INVALID = (InvalidRequest, "the body is not a JSON object of the documented fields (`details.field` names "
                           "the field refused)")
TOO_LARGE = (PayloadTooLarge, f"the body is larger than {MAX_BODY_BYTES} bytes")
NOT_JSON = (UnsupportedMediaType, "the body is not sent as application/json")
INTERNAL = (InternalError, "an unexpected failure (reported to Sentry); nothing was changed")


def document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document; `server_url` is where the functions are served (…/functions/v1)."""
    first_year, last_year = MOMENT_YEARS.start, MOMENT_YEARS.stop - 1
    moment = {"type": "string", "format": "date-time",
              "description": f"ISO 8601 with its UTC offset, in the years {first_year}–{last_year}"}
    schemas: dict[str, Any] = {
        "ErrorDetails": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "field": {"type": "string", "description": "the request field that was refused"},
                "reason": {"enum": sorted(SLOT_UNAVAILABLE_REASONS),
                           "description": "why the slot cannot be booked (SLOT_UNAVAILABLE)"},
            },
        },
        "BookingRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["specialist_id", "starts_at"],
            "properties": {
                "specialist_id": {"type": "string", "format": "uuid"},
                "starts_at": moment,
                "duration_minutes": _optional({"type": "integer", "minimum": 15, "maximum": 240,
                                               "description": "default: the specialist's current rate's"}),
                "session_type": _optional({"enum": list(SESSION_TYPES), "description": "default: initial"}),
                "special_requests": _optional({**_trimmed_text(2000),
                                               "description": "at most 2000 characters, trimmed, no NUL"}),
                "intake": intake_openapi.booking_intake_property(),
            },
        },
        "BookingCreated": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "session_id", "booking_id", "booking_reference", "starts_at", "ends_at",
                         "status", "cancel_url"],
            "properties": {
                "success": {"const": True},
                "session_id": {"type": "string", "format": "uuid"},
                "booking_id": {"type": "string", "format": "uuid",
                               "description": "the same as session_id: what booking-cancel's booking_id takes"},
                "booking_reference": {"type": "string", "pattern": r"^BK-\d{4}-\d+$",
                                      "description": "human-readable, unique; identifies, does not authorize"},
                "starts_at": {"type": "string", "format": "date-time"},
                "ends_at": {"type": "string", "format": "date-time"},
                "status": {"const": "confirmed"},
                "cancel_url": {"type": "string", "format": "uri",
                               "description": "the session's token-cancel link, for the confirmation email"},
            },
        },
        "CancelRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["booking_id", "reason"],
            "properties": {
                "booking_id": {"type": "string", "format": "uuid", "description": "the session's id"},
                "reason": {**_trimmed_text(MAX_REASON_LENGTH, required_content=True),
                           "description": f"why; at most {MAX_REASON_LENGTH} characters, trimmed, not blank, "
                                          "no NUL"},
            },
        },
        "Cancelled": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "message"],
            "properties": {"success": {"const": True}, "message": {"const": SUCCESS_MESSAGE}},
        },
        "CalendarSyncReport": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "deleted", "failed"],
            "properties": {
                "success": {"const": True},
                "deleted": {"type": "integer", "minimum": 0, "description": "calendar events deleted now"},
                "failed": {"type": "integer", "minimum": 0, "description": "deletions that failed again"},
                "stuck_reported": {"type": "integer", "minimum": 0,
                                   "description": "deletions still failing a day on, reported to Sentry now"},
                "events_created": {"type": "integer", "minimum": 0,
                                   "description": "events of dispatched sessions created now (their first try failed)"},
                "events_failed": {"type": "integer", "minimum": 0,
                                  "description": "events still failing to be created; retried next run"},
                "events_moved": {"type": "integer", "minimum": 0,
                                 "description": "events of rescheduled sessions moved now (their first try failed)"},
                "moves_failed": {"type": "integer", "minimum": 0,
                                 "description": "event moves that failed again; retried with backoff"},
            },
        },
        "RescheduleRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["booking_id", "starts_at"],
            "properties": {
                "booking_id": {"type": "string", "format": "uuid", "description": "the session's id"},
                "starts_at": {**moment, "description": moment["description"] + "; the session keeps its length"},
                "reason": _optional({**_trimmed_text(reschedule_api.MAX_REASON_LENGTH),
                                     "description": f"why, for the audit log; at most "
                                                    f"{reschedule_api.MAX_REASON_LENGTH} characters, trimmed, no NUL"}),
            },
        },
        "Rescheduled": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "message", "session_id", "booking_id", "booking_reference", "status",
                         "starts_at", "ends_at", "previous_starts_at", "previous_ends_at", "cancel_url"],
            "properties": {
                "success": {"const": True},
                "message": {"const": reschedule_api.SUCCESS_MESSAGE},
                "session_id": {"type": "string", "format": "uuid", "description": "unchanged by the move"},
                "booking_id": {"type": "string", "format": "uuid", "description": "the same as session_id"},
                "booking_reference": {"type": "string", "pattern": r"^BK-\d{4}-\d+$",
                                      "description": "unchanged by the move"},
                "status": {"const": "confirmed"},
                "starts_at": {"type": "string", "format": "date-time", "description": "the new start"},
                "ends_at": {"type": "string", "format": "date-time", "description": "the new end"},
                "previous_starts_at": {"type": "string", "format": "date-time"},
                "previous_ends_at": {"type": "string", "format": "date-time"},
                "cancel_url": {"type": "string", "format": "uri",
                               "description": "the session's link (the same as before the move: it names the session)"},
            },
        },
        "NotificationsReport": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "email", "reminders_queued", "sent", "retrying", "failed", "skipped"],
            "properties": {
                "success": {"const": True},
                "email": {"enum": ["on", "off"],
                          "description": "off: SMTP_URL or EMAIL_FROM is not set; nothing is queued or sent"},
                "reminders_queued": {"type": "integer", "minimum": 0, "description": "reminders that fell due"},
                "sent": {"type": "integer", "minimum": 0, "description": "emails the SMTP server accepted"},
                "retrying": {"type": "integer", "minimum": 0,
                             "description": "emails deferred (4xx) or not sent (server unavailable); retried with backoff"},
                "failed": {"type": "integer", "minimum": 0,
                           "description": "emails refused for good (5xx, or no address); never retried"},
                "skipped": {"type": "integer", "minimum": 0,
                            "description": "emails no longer true (session cancelled, moved or started)"},
            },
        },
        "DispatchRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "dry_run": _optional({"type": "boolean",
                                      "description": "report what would be created, create nothing"}),
                "horizon_days": _optional({"type": "integer", "minimum": 0, "maximum": 60,
                                           "description": "create occurrences up to this many days ahead "
                                                          "(default DISPATCH_HORIZON_DAYS)"}),
            },
        },
        "DispatchReport": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "message", "count", "bookings", "errors", "dry_run"],
            "properties": {
                "success": {"const": True},
                "message": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
                "bookings": {"type": "array", "items": {"type": "string", "format": "uuid"},
                             "description": "the sessions created"},
                "errors": {
                    "type": "array",
                    "description": "occurrences that could not be booked, and why",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["recurring_id", "occurrence_date", "error"],
                        "properties": {
                            "recurring_id": {"type": "string", "format": "uuid"},
                            "occurrence_date": {"type": "string", "format": "date"},
                            "error": {"type": "string"},
                        },
                    },
                },
                "dry_run": {"type": "boolean"},
            },
        },
        "RecordingLinkRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["recording_id"],
            "properties": {
                "recording_id": {"type": "string", "format": "uuid",
                                 "description": "the meeting_recordings row's id"},
            },
        },
        "RecordingLink": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "signed_url", "expires_at"],
            "properties": {
                "success": {"const": True},
                "signed_url": {"type": "string", "format": "uri",
                               "description": "fetches the file with no credentials until expires_at; a bearer "
                                              "credential: do not store or share it"},
                "expires_at": {"type": "string", "format": "date-time",
                               "description": f"when the link stops working: at most {MAX_LINK_SECONDS // 3600} "
                                              "hours away, never after the recording's own expiry"},
            },
        },
        "RecordingExpiryReport": {
            "type": "object",
            "additionalProperties": False,
            "required": ["success", "removed"],
            "properties": {
                "success": {"const": True},
                "removed": {"type": "integer", "minimum": 0,
                            "description": "recordings whose files were removed and rows marked now"},
            },
        },
    }

    schemas.update(intake_openapi.schemas())

    booking_create = {
        "post": {
            "operationId": "bookingCreate",
            "summary": "A signed-in client books a session with a specialist",
            "description": "Checks the slot (the specialist's weekly hours in their timezone, exceptions, "
                           "minimum notice, maximum advance, both parties' sessions), creates the Google "
                           "Calendar event and stores the confirmed session, all or nothing.",
            "security": USER_SECURITY,
            "requestBody": _json_body("BookingRequest", {
                "specialist_id": str(DEMO_SPECIALIST_ID),  # `therapy-db demo`'s specialist
                "starts_at": _bookable_example_time(),
                "duration_minutes": 50,
                "session_type": "initial",
                "special_requests": "Ground floor room, please",
                "intake": intake_openapi.EXAMPLE_INTAKE,
            }),
            "responses": {
                **_ok("The session is booked", "BookingCreated"),
                **_errors(
                    INVALID, UNAUTHORIZED_USER,
                    (Forbidden, "the caller is not a client"),
                    (NotFound, "no such specialist, or the specialist has no current rate"),
                    (SlotUnavailable, "the slot cannot be booked; `details.reason` says why"),
                    TOO_LARGE, NOT_JSON, INTERNAL,
                    (CalendarUnavailable, "the calendar could not be updated, so nothing was booked"),
                ),
            },
        },
    }
    booking_cancel = {
        "post": {
            "operationId": "bookingCancel",
            "summary": "The session's client or specialist (or an admin) cancels it",
            "description": "Sets the session `cancelled` and records the cancellation, its status history "
                           "and audit entry; the calendar event is deleted after the commit (retried by "
                           "calendar-sync until it is). A session the caller is not part of answers "
                           "NOT_FOUND, exactly like one that does not exist.",
            "security": USER_SECURITY,
            "requestBody": _json_body("CancelRequest", {
                "booking_id": "0b5e8d3a-7c21-4f6e-8d9a-2b3c4d5e6f70",  # booking-create's booking_id
                "reason": "I have a conflicting appointment",
            }),
            "responses": {
                **_ok("The session is cancelled", "Cancelled"),
                **_errors(
                    INVALID, UNAUTHORIZED_USER,
                    (Forbidden, "anonymous accounts cannot cancel"),
                    (NotFound, "no such session among the caller's"),
                    (AlreadyCancelled, "the session is already cancelled"),
                    (BookingInPast, "the session has already started"),
                    (CancellationTooLate, "a client cancelling inside CANCELLATION_MIN_NOTICE_HOURS"),
                    TOO_LARGE, NOT_JSON, INTERNAL,
                ),
            },
        },
    }
    booking_reschedule = {
        "post": {
            "operationId": "bookingReschedule",
            "summary": "The session's client or specialist (or an admin) moves it to another time",
            "description": "Moves the session in place (same id, booking reference, calendar event and email UID), "
                           "keeping its length, in one transaction: the new slot is checked by the booking rules "
                           "(its own current slot does not count), the move is audited, the \"moved\" emails are "
                           "queued; the calendar event is moved after the commit (retried by calendar-sync until "
                           "it is). A session the caller is not part of answers NOT_FOUND, exactly like one that "
                           "does not exist.",
            "security": USER_SECURITY,
            "requestBody": _json_body("RescheduleRequest", {
                "booking_id": "0b5e8d3a-7c21-4f6e-8d9a-2b3c4d5e6f70",  # booking-create's booking_id
                "starts_at": _bookable_example_time(),
                "reason": "A work meeting moved",
            }),
            "responses": {
                **_ok("The session has moved", "Rescheduled"),
                **_errors(
                    (InvalidRequest, "the body is not a JSON object of the documented fields, or the session "
                                     "already starts then, or the specialist no longer offers its length "
                                     "(`details.field` names the field refused)"),
                    UNAUTHORIZED_USER,
                    (Forbidden, "anonymous accounts cannot move sessions"),
                    (NotFound, "no such session among the caller's"),
                    (AlreadyCancelled, "the session is cancelled"),
                    (BookingInPast, "the session has already started"),
                    (SlotUnavailable, "the new slot cannot be booked; `details.reason` says why"),
                    (RescheduleTooLate, "a client moving a session that starts inside "
                                        "CANCELLATION_MIN_NOTICE_HOURS"),
                    TOO_LARGE, NOT_JSON, INTERNAL,
                ),
            },
        },
    }
    token_parameter = {
        "name": "token", "in": "query", "required": False, "schema": {"type": "string"},
        "description": "the signed token of the emailed link (a missing or altered one shows the invalid-link page)",
    }
    link_pages = {
        "404": _page("The link is not valid (missing, altered, or revoked by a key rotation)"),
        "409": _page("The session was already cancelled, or has already started; or (POST) the chosen time is "
                     "not free, or it is too late for the client to move the session"),
        "429": _page("Too many invalid links from this address in the last 15 minutes"),
        "500": _page("Something went wrong; nothing was changed"),
    }
    token_cancel = {
        "get": {
            "operationId": "tokenCancelShow",
            "summary": "The emailed cancellation link: shows the session, a confirmation button and the free "
                       "times to move it to",
            "description": "Opening the link changes nothing (mail scanners open links): only the page's "
                           "POST cancels or moves. No login; the link is the credential. The link names the "
                           "session, which a move never changes, so any link ever sent opens it as it is now. "
                           "The free times are those of the coming 14 days for the session's length, as its "
                           "client sees them (the session's own slot ignored).",
            "security": [],
            "parameters": [token_parameter],
            "responses": {"200": _page("The session, a button that cancels it, and the free times to move it to"),
                          **link_pages},
        },
        "post": {
            "operationId": "tokenCancelConfirm",
            "summary": "The page's forms: cancels the session, or moves it to the chosen time",
            "description": "Sent by the page's buttons (HTML form posts). The token comes from the form, "
                           "or else from the query string. Without `action`, the session is cancelled; with "
                           "`action=reschedule`, it moves to start at `starts_at` (keeping its length) under "
                           "the same rules as booking-reschedule. Either is recorded in the client's name.",
            "security": [],
            "parameters": [token_parameter],
            "requestBody": {
                "required": False,
                "content": {"application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": {
                        "token": {"type": "string"},
                        "action": {"enum": ["cancel", "reschedule"], "description": "absent: cancel"},
                        "starts_at": {"type": "string", "format": "date-time",
                                      "description": "with action=reschedule: the chosen start, with its offset"},
                    }},
                }},
            },
            "responses": {"200": _page("The session is cancelled, or has moved"),
                          "400": _page("No time, or an unreadable one, was chosen to move to (or the session's "
                                       "own; the free times are shown again), or the action is unknown; "
                                       "nothing is changed"),
                          **link_pages,
                          "413": _page("The form is larger than a link's form can be (1 KiB): nothing is read "
                                       "or changed")},
        },
    }
    calendar_sync = {
        "post": {
            "operationId": "calendarSync",
            "summary": "Retries the calendar deletions and moves that failed (service; pg_cron, every minute)",
            "description": "Deletes every due event of a cancelled session and moves every due event of a "
                           "rescheduled session to its latest times, in batches, with backoff; reports to Sentry "
                           "those still failing a day after the cancellation or move. The request body is ignored.",
            "security": SERVICE_SECURITY,
            "responses": {**_ok("What was retried", "CalendarSyncReport"),
                          **_errors(UNAUTHORIZED_SERVICE, INTERNAL)},
        },
    }
    notifications = {
        "post": {
            "operationId": "sendNotifications",
            "summary": "Sends the queued emails (service; pg_cron, every minute)",
            "description": "Queues the reminders that fell due, then sends every due message of the outbox "
                           "(confirmations, moves, cancellations, reminders) over SMTP and records each outcome. "
                           "Concurrent runs take different messages. The request body is ignored.",
            "security": SERVICE_SECURITY,
            "responses": {**_ok("What was sent", "NotificationsReport"),
                          **_errors(UNAUTHORIZED_SERVICE, INTERNAL)},
        },
    }
    recurring_dispatcher = {
        "post": {
            "operationId": "recurringDispatch",
            "summary": "Creates the due occurrences of recurring bookings (service; pg_cron, daily)",
            "description": "Idempotent: a second run the same day creates nothing, and overlapping runs are "
                           "safe. One recurrence that cannot be booked never stops the others; it is "
                           "reported in `errors`. The body may be empty.",
            "security": SERVICE_SECURITY,
            "requestBody": _json_body("DispatchRequest", {"dry_run": True, "horizon_days": 7}, required=False),
            "responses": {
                **_ok("What was dispatched (or, with dry_run, would be)", "DispatchReport"),
                **_errors(INVALID, UNAUTHORIZED_SERVICE, TOO_LARGE, NOT_JSON, INTERNAL),
            },
        },
    }

    schemas["Health"] = {
        "type": "object",
        "required": ["status", "database", "calendar"],
        "properties": {
            "status": {"enum": ["ok", "degraded"]},
            "database": {"type": "string", "description": "`ok`, or `unavailable: <error class>`"},
            "calendar": {"enum": ["enabled", "disabled"]},
            "calendar_deletions_pending": {"type": "integer", "minimum": 0},
            "calendar_deletions_stuck": {"type": "integer", "minimum": 0,
                                         "description": "pending for more than a day: degraded"},
            "calendar_moves_pending": {"type": "integer", "minimum": 0,
                                       "description": "events of rescheduled sessions still to move"},
            "calendar_moves_stuck": {"type": "integer", "minimum": 0,
                                     "description": "failing for more than a day since the move: degraded"},
            "scheduled_call_failures_24h": {"type": "integer", "minimum": 0},
            "email": {"enum": ["enabled", "disabled"], "description": "disabled: SMTP_URL or EMAIL_FROM unset"},
            "email_backlog": {"type": "integer", "minimum": 0, "description": "emails waiting to be sent"},
            "email_oldest_unsent_at": {"type": ["string", "null"], "format": "date-time",
                                       "description": "when the oldest waiting email was queued"},
            "email_refused_7d": {"type": "integer", "minimum": 0,
                                 "description": "emails the SMTP server refused for good in the last 7 days"},
        },
    }
    schemas["OpenApiDocument"] = {"type": "object", "required": ["openapi", "info", "paths"],
                                  "properties": {"openapi": {"const": OPENAPI_VERSION}}}
    health = {
        "get": {
            "operationId": "health",
            "summary": "The database and calendar state, for people and probes",
            "security": [],
            "responses": {
                **_ok("Everything answers", "Health"),
                "503": {"description": "The database does not answer, or calendar deletions are stuck",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}},
            },
        },
    }
    openapi_document = {
        "get": {
            "operationId": "openapiDocument",
            "summary": "This document",
            "security": [],
            "responses": _ok("The OpenAPI 3.1 description of the functions", "OpenApiDocument"),
        },
    }
    recording_url = {
        "post": {
            "operationId": "recordingUrl",
            "summary": "A party of the session (or an admin) gets a short-lived link to its recording",
            "description": f"Who may have it is decided by the access rules of `meeting_recordings`, evaluated as "
                           f"the caller; a recording the caller may not read answers NOT_FOUND, exactly like one "
                           f"that does not exist. The link lives at most {MAX_LINK_SECONDS // 3600} hours and never "
                           "past the recording's `expires_at`; it is signed by Storage, audited, and never stored.",
            "security": USER_SECURITY,
            "requestBody": _json_body("RecordingLinkRequest", {"recording_id": "3c9d2e1f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"}),
            "responses": {
                **_ok("The link", "RecordingLink"),
                **_errors(
                    INVALID, UNAUTHORIZED_USER,
                    (Forbidden, "anonymous accounts cannot have links"),
                    (NotFound, "no such recording among those the caller may read, or its file is missing"),
                    (RecordingExpired, "the recording is past its expiry; its file is deleted"),
                    TOO_LARGE, NOT_JSON, INTERNAL,
                    (StorageUnavailable, "Storage did not sign the link; nothing was issued"),
                ),
            },
        },
    }
    recording_expiry = {
        "post": {
            "operationId": "recordingExpiry",
            "summary": "Removes the files of expired recordings, then marks their rows (service; pg_cron, daily)",
            "description": "Batch by batch: the files past `expires_at` are removed from Storage, then their rows "
                           "get `deleted_at` (kept as the record). A batch Storage refuses stays for the next run; "
                           "overlapping runs remove each file once. The request body is ignored.",
            "security": SERVICE_SECURITY,
            "responses": {
                **_ok("What was removed", "RecordingExpiryReport"),
                **_errors(UNAUTHORIZED_SERVICE, INTERNAL,
                          (StorageUnavailable, "Storage failed; what was removed before is marked, the rest "
                                               "is retried on the next run")),
            },
        },
    }

    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Therapy booking functions", "version": _app_version(), "description": DESCRIPTION},
        "servers": [
            {"url": server_url or LOCAL_SERVER, "description": "local: therapy-db up"},
            {"url": "https://{region}-{project}.cloudfunctions.net",
             "description": "deployed with therapy-db deploy (deploy.yaml)",
             "variables": {"region": {"default": "europe-west1"}, "project": {"default": "my-project"}}},
        ],
        "security": USER_SECURITY,
        "paths": {
            "/booking-create": booking_create,
            "/token-cancel": token_cancel,
            "/booking-cancel": booking_cancel,
            "/booking-reschedule": booking_reschedule,
            "/calendar-sync": calendar_sync,
            "/recurring-dispatcher": recurring_dispatcher,
            "/intake-form": intake_openapi.path(
                ok=_ok, errors=_errors, json_body=_json_body, user_security=USER_SECURITY, invalid=INVALID,
                unauthorized=UNAUTHORIZED_USER, too_large=TOO_LARGE, not_json=NOT_JSON, internal=INTERNAL),
            "/health": health,
            "/openapi.json": openapi_document,
            "/notifications": notifications,
            "/recording-url": recording_url,
            "/recording-expiry": recording_expiry,
        },
        "components": {
            "securitySchemes": {
                "userToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                              "description": "a signed-in user's Supabase access token"},
                "serviceKey": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                               "description": "the project's service key (role service_role)"},
                "secretKey": {"type": "apiKey", "in": "header", "name": "apikey",
                              "description": "Supabase's secret API key (sb_secret_…), equal to SUPABASE_SECRET_KEY"},
            },
            "schemas": schemas,
        },
    }
