"""Parsing request bodies: strict JSON objects, field by field, with a clear
INVALID_REQUEST naming the offending field and value for anything else.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from shared.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MAX_BODY_BYTES = 64 * 1024
MOMENT_YEARS = range(1900, 3000)

Parser = Callable[[str, Any], Any]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def json_object(request) -> dict[str, Any]:
    """The request's body as a JSON object (Content-Type application/json, at most 64 KiB).

    The limit holds before anything is read: a larger Content-Length is refused at
    once, and a body without one (chunked) is read only up to the limit.
    """
    limit_body(request, MAX_BODY_BYTES)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"Send the request as application/json, not {request.mimetype or 'no content type'}"
        )
    raw = read_body(request)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:  # json raises it, not JSONDecodeError, for deeply nested arrays or objects
        raise InvalidRequest("The request body is nested too deeply") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise InvalidRequest("The request body holds a number too long to read (over 4300 digits)") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return body


def limit_body(request, max_bytes: int) -> None:
    """Caps what may be read of the request body, before any of it is read.

    A larger Content-Length is refused at once (413). A body without one
    (chunked) is read through werkzeug's limited stream, which gunicorn enables
    by marking chunked input as terminated: at most one byte more than the cap is
    ever read, and that byte is how `read_body` tells a body at the cap from a
    larger one (the stream itself stops quietly at its limit).
    """
    request.max_content_length = max_bytes + 1
    request.max_form_memory_size = max_bytes + 1
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"The request body is {length} bytes; at most {max_bytes} are accepted")


def read_body(request) -> bytes:
    """The body, read within the cap set by `limit_body`; 413 when it is larger."""
    from werkzeug.exceptions import RequestEntityTooLarge

    max_bytes = request.max_content_length - 1
    try:
        data = request.get_data(cache=True, as_text=False)
    except RequestEntityTooLarge:
        data = None
    if data is None or len(data) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes")
    return data


def settle_body(request) -> None:
    """Leaves the body read, within the cap, whatever happened before.

    functions-framework reads the whole body after every answer (its
    ``read_request`` hook calls ``request.get_data()``). Under the cap that read
    would fail with 413 after our answer, and without the cap it would hold any
    body in memory; so the body is read here, at most the cap, and when it is
    over the cap it is marked as read (werkzeug's cache of ``get_data``, empty).
    The unread rest is left to the server, which drains it in small chunks.
    """
    from werkzeug.exceptions import RequestEntityTooLarge

    if request.max_content_length is None:
        return
    try:
        request.get_data(cache=True)
    except RequestEntityTooLarge:
        request._cached_data = b""  # what get_data returns from now on


def fields(body: Mapping[str, Any], required: Mapping[str, Parser], optional: Mapping[str, Parser]) -> dict:
    """Parses every known field; unknown and missing fields are refused."""
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise InvalidRequest(f"Unknown field {unknown[0]!r}", details={"field": unknown[0]})
    parsed: dict[str, Any] = {}
    for name, parse in required.items():
        if name not in body or body[name] is None:
            raise InvalidRequest(f"Field {name!r} is required", details={"field": name})
        parsed[name] = parse(name, body[name])
    for name, parse in optional.items():
        parsed[name] = parse(name, body[name]) if body.get(name) is not None else None
    return parsed


# -- field parsers ------------------------------------------------------------------

def a_uuid(name: str, value: Any) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise InvalidRequest(f"Field {name!r} must be a UUID, got {_show(value)}", details={"field": name})


def a_flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidRequest(f"Field {name!r} must be true or false, got {_show(value)}", details={"field": name})


def a_moment(name: str, value: Any) -> datetime:
    """An ISO 8601 date and time with its UTC offset (a bare local time is ambiguous),
    in the years MOMENT_YEARS (UTC): nothing here is scheduled outside them, and
    arithmetic near Python's year 1 or 9999 would overflow."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                raise InvalidRequest(
                    f"Field {name!r} needs a UTC offset (e.g. 2026-12-01T10:00:00+00:00), got {_show(value)}",
                    details={"field": name},
                )
            try:
                year = moment.astimezone(timezone.utc).year
            except OverflowError:
                year = None
            if year not in MOMENT_YEARS:
                raise InvalidRequest(
                    f"Field {name!r} must lie in the years {MOMENT_YEARS.start}–{MOMENT_YEARS.stop - 1}, "
                    f"got {_show(value)}",
                    details={"field": name},
                )
            return moment
    raise InvalidRequest(f"Field {name!r} must be an ISO 8601 date and time, got {_show(value)}",
                         details={"field": name})


def an_integer(low: int, high: int) -> Parser:
    def parse(name: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        raise InvalidRequest(f"Field {name!r} must be a whole number from {low} to {high}, got {_show(value)}",
                             details={"field": name})
    return parse


def a_text(max_length: int, *, required_content: bool = False) -> Parser:
    def parse(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise InvalidRequest(f"Field {name!r} must be text, got {_show(value)}", details={"field": name})
        text = value.strip()
        if "\x00" in text:  # PostgreSQL text cannot hold NUL
            raise InvalidRequest(f"Field {name!r} must not contain NUL characters", details={"field": name})
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800") cannot be stored either
                raise InvalidRequest(f"Field {name!r} is not valid Unicode text", details={"field": name}) from None
        if required_content and not text:
            raise InvalidRequest(f"Field {name!r} must not be empty", details={"field": name})
        if len(text) > max_length:
            raise InvalidRequest(f"Field {name!r} is longer than {max_length} characters",
                                 details={"field": name})
        return text
    return parse


def one_of(*choices: str) -> Parser:
    def parse(name: str, value: Any) -> str:
        if value in choices:
            return value
        raise InvalidRequest(f"Field {name!r} must be one of {', '.join(choices)}, got {_show(value)}",
                             details={"field": name})
    return parse
