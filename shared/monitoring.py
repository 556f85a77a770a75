"""Error reporting with sentry-sdk: on when ``SENTRY_DSN`` is set, off otherwise.

Unexpected errors and server-side failures (5xx: calendar down, database
trouble) are captured as events tagged with the function, the session id and
the error code. A caller's mistake (4xx) is only a breadcrumb: it is not an
error of ours. No personal data leaves: ``data_collection`` (the SDK's current
option; ``send_default_pii`` is deprecated) collects no user, cookies, headers,
bodies, query strings or frame variables, and every event is scrubbed of request bodies, headers, cookies, user data and local
variables, and email addresses and JWTs are masked in whatever text remains,
before it is sent.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import sentry_sdk

from shared.errors import AppError
from shared.settings import get_settings

log = logging.getLogger("functions")

_init_lock = threading.Lock()
_initialized = False

# Addresses (also percent-encoded, as in a calendar URL: a specialist's calendar id is
# usually their email) and JWTs, wherever they appear in text: exception values, log
# messages and breadcrumbs quote URLs and upstream answers.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


# What integrations may collect on their own: nothing personal (the scrubber below still runs).
DATA_COLLECTION: dict[str, Any] = {
    "user_info": False,
    "cookies": {"mode": "off"},
    "http_headers": {"request": {"mode": "off"}},
    "http_bodies": [],
    "url_query_params": {"mode": "off"},
    "stack_frame_variables": False,
    "database_query_data": False,
    "gen_ai": {"inputs": False, "outputs": False},
    "graphql": {"document": False, "variables": False},
}


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _JWT.sub("[jwt]", _EMAIL.sub("[email]", value))
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def _scrub(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    """Keeps only what diagnosis needs: no bodies, headers, query strings, users or locals."""
    request = event.get("request")
    if isinstance(request, dict):
        event["request"] = {"method": request.get("method"), "url": str(request.get("url", "")).split("?")[0]}
    event.pop("user", None)
    event.pop("extra", None)
    for exception in (event.get("exception") or {}).get("values") or []:
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    for crumb in (event.get("breadcrumbs") or {}).get("values") or []:
        crumb.pop("data", None)
    return _redact(event)


def init(**options: Any) -> bool:
    """Starts Sentry once per process when a DSN is set (or options are given, in tests)."""
    global _initialized
    if _initialized:
        return True
    dsn = get_settings().sentry_dsn
    if not dsn and not options:
        return False
    with _init_lock:
        if not _initialized:
            from sentry_sdk.integrations.flask import FlaskIntegration
            from sentry_sdk.integrations.logging import LoggingIntegration

            sentry_sdk.init(
                dsn=dsn,
                # Log records are breadcrumbs only: events come from record_error and
                # report_message, tagged, and once each (a logged error would be a second event).
                integrations=[FlaskIntegration(), LoggingIntegration(level=logging.INFO, event_level=None)],
                data_collection=DATA_COLLECTION,
                include_local_variables=False,
                max_request_body_size="never",
                traces_sample_rate=0,
                before_send=_scrub,
                **options,
            )
            _initialized = True
    return True


def reset() -> None:
    """Forgets the initialisation (tests that re-init with their own transport)."""
    global _initialized
    _initialized = False


@contextmanager
def scope(function_name: str) -> Iterator[None]:
    """One invocation: everything reported inside is tagged with the function."""
    init()
    with sentry_sdk.isolation_scope() as current:
        current.set_tag("function", function_name)
        yield


def tag_session(session_id: uuid.UUID | str) -> None:
    sentry_sdk.set_tag("session_id", str(session_id))


def record_error(exc: BaseException, code: str) -> None:
    """A caller's mistake becomes a breadcrumb; anything else an event."""
    server_side = not isinstance(exc, AppError) or exc.http_status >= 500
    sentry_sdk.set_tag("error_code", code)
    if server_side:
        log.error("%s: %s", code, exc, exc_info=not isinstance(exc, AppError))
        sentry_sdk.capture_exception(exc)
    else:
        sentry_sdk.add_breadcrumb(category="validation", message=code, level="info")


def report_message(message: str, *, level: str = "warning", **tags: str) -> None:
    """An operational problem that is not an exception (e.g. a deletion failing for a day)."""
    init()
    with sentry_sdk.new_scope() as current:
        for key, value in tags.items():
            current.set_tag(key, value)
        sentry_sdk.capture_message(message, level=level)


def flush() -> None:
    if _initialized:
        sentry_sdk.flush(timeout=2)
